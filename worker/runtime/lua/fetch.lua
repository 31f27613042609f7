-- hbw's fetch: Dramatiq's "fetch" command (dispatch.lua), except that it returns each message's
-- Redis id beside its data, so the consumer acks the id Redis holds the message under, never an
-- id a producer wrote into the message.
--
-- KEYS: none (Dramatiq's layout is built from the namespace, as dispatch.lua does)
-- ARGV: namespace, queue_name, worker_id, prefetch
-- Returns {id1, data1, id2, data2, ...}; data is false when the id has no message (then the id is
-- dropped from the ack set: there is nothing to process or hand back).

local namespace, queue_name, worker_id = ARGV[1], ARGV[2], ARGV[3]
local prefetch = tonumber(ARGV[4])

local now = redis.call("time")
redis.call("zadd", namespace .. ":__heartbeats__", now[1] * 1000 + math.floor(now[2] / 1000), worker_id)

local queue = namespace .. ":" .. queue_name
local acks = namespace .. ":__acks__." .. worker_id .. "." .. queue_name
local messages = queue .. ".msgs"

local reply = {}
for _ = 1, prefetch do
    local message_id = redis.call("lpop", queue)
    if not message_id then
        break
    end
    local data = redis.call("hget", messages, message_id)
    if data then
        redis.call("sadd", acks, message_id)
    end
    table.insert(reply, message_id)
    table.insert(reply, data)
end
return reply
