"""Exit codes of the ``ifqa`` commands."""

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # ``ifqa validate --check``: the targets were not met
EXIT_USAGE = 2  # bad command line or input (argparse's own code for usage errors)
EXIT_SOME_FAILED = 3  # ``score``: some files could not be read; ``download``: some models
EXIT_ALL_FAILED = 4  # ``score``, ``compare``: nothing could be scored; ``download``: nothing
EXIT_NO_FACE = 5  # ``score --align``: every file was read, but some photos had no face
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
