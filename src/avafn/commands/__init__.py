"""One module per CLI command group; each defines ``register(subparsers)``.

Commands hold no logic of their own: they parse arguments and call library functions.
"""
