"""Front ends and the command core: the Textual app, the plain REPL and the `steer` CLI."""
