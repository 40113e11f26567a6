"""The ``mtasts`` command line: parse arguments, call the library, render."""
