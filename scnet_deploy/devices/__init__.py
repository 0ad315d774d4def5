"""Running verbs on devices over ssh (remote.py), several at a time."""
