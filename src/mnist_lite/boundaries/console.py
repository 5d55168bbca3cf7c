"""How a refused value reads in one line of the console."""

import reprlib

_short = reprlib.Repr()  # a refused value is quoted this short, however large or deep it is
_short.maxstring = _short.maxother = 80
_short.maxlist = _short.maxdict = _short.maxtuple = 4
_short.maxlevel = 2
shown = _short.repr
