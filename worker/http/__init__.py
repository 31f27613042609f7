"""`hbw serve`: WakaTime's heartbeat API over HTTP (Starlette on uvicorn): keys, limits, and
requests grouped into messages."""
