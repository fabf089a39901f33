"""HTTP routers: thin, they parse, call one service function and shape the answer."""
