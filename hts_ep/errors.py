"""How the package reports problems (one rule for every module):

- an error is an exception of the package's own classes (`experiments.SpecError`,
  `train.InputError`, `data.DataMissingError`, `errors.BookError`, ...), whose message
  names the value, the parameter and what is allowed; the command lines (`hts-ep`,
  `python -m hts_ep.book`) catch these classes only, so a bug keeps its traceback;
- progress and information go through `logging` (loggers named `hts_ep.<module>`),
  which the command lines send to the terminal;
- `warnings.warn` only for a library warning the caller may act on or silence
  (a compiled kernel that is unavailable, so a slower path runs);
- `print` only for what a command was asked to output (tables, summaries).
"""


class BookError(RuntimeError):
    """A step of the book's build failed; the message says which and why."""
