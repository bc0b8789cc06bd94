"""``ifqa compare``'s work: several restorers' outputs of the same faces, scored, ranked and
written as an HTML report (:mod:`.comparison`; the command line is :mod:`ifqa_loss.cli.compare`)."""
