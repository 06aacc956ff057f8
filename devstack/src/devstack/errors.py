class StackError(RuntimeError):
    """A step of the stack failed; the message says what happened and what to do."""
