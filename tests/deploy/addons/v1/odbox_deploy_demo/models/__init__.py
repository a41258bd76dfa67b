from . import demo
