"""Clean aligned faces and what degrades them, shared by the trainer, its validation and
``ifqa audit``: reading face files and the held-out split (:mod:`.images`), and the plain
degradations at explicit strengths (:mod:`.degrade`)."""
