"""Image files: scoring many of them (:mod:`.scoring`), the flags of inputs a score says nothing
about (:mod:`.flags`), and the pictures of realness maps (:mod:`.heatmap`)."""
