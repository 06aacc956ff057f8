"""Code that two or more services share. It imports no service and holds no business rule."""
