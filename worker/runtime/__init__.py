"""The Dramatiq process (`hbw worker`): the broker and its Redis layout, the actors and their
messages, middleware, metrics, dead letters, the outbox, and the processes that run them."""
