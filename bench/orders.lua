-- wrk script for the orders benchmark.
--
--   wrk ... -s bench/orders.lua http://127.0.0.1:PORT -- MODE DATA_FILE
--
-- MODE is `post` (POST /orders with 1-3 random items), `post-key` (the same with a fresh
-- `Idempotency-Key` each time, so every request is a first one), `get` (GET /orders/{id}
-- of a random seeded order, as its owner) or `list` (GET /orders?limit=10 as a random user).
-- DATA_FILE is Lua written by bench/run.py: `return {{owner=..., token=..., ids={...}}, ...}`.
-- Every request carries both `Authorization: Bearer <token>` (read by the service) and
-- `X-Owner: <user>` (read by the reference), so both servers get byte-identical requests.
-- Requests are built in init(), so request() costs a table lookup (see wrk's SCRIPTING).

local PRODUCTS = { "latte", "cappuccino", "espresso", "mocha", "flat white", "americano" }
local SIZES = { "small", "medium", "big" }
local PREBUILT = 4096

local requests = {}
local count = 0
-- For `post-key`, requests are made per call from these (a key must never repeat).
local keyed = nil
local sent = 0

local thread_number = 0

function setup(thread)
  thread_number = thread_number + 1
  thread:set("seed", thread_number)
end

local function headers_for(user, with_body)
  local headers = {
    ["Authorization"] = "Bearer " .. user.token,
    ["X-Owner"] = user.owner,
  }
  if with_body then
    headers["Content-Type"] = "application/json"
  end
  return headers
end

local function order_body()
  local items = {}
  for i = 1, math.random(1, 3) do
    items[i] = string.format(
      '{"product":"%s","size":"%s","quantity":%d}',
      PRODUCTS[math.random(#PRODUCTS)],
      SIZES[math.random(#SIZES)],
      math.random(1, 5)
    )
  end
  return '{"order":[' .. table.concat(items, ",") .. "]}"
end

function init(args)
  local mode, data_file = args[1], args[2]
  if data_file == nil then
    error("usage: -- post|post-key|get|list DATA_FILE")
  end
  math.randomseed(os.time() * 100 + (seed or 0))
  local users = dofile(data_file)
  for i = 1, PREBUILT do
    local user = users[math.random(#users)]
    if mode == "post" then
      requests[i] = wrk.format("POST", "/orders", headers_for(user, true), order_body())
    elseif mode == "post-key" then
      keyed = keyed or {}
      keyed[i] = { headers = headers_for(user, true), body = order_body() }
      requests[i] = true
    elseif mode == "get" then
      local id = user.ids[math.random(#user.ids)]
      requests[i] = wrk.format("GET", "/orders/" .. id, headers_for(user, false))
    elseif mode == "list" then
      requests[i] = wrk.format("GET", "/orders?limit=10", headers_for(user, false))
    else
      error("unknown mode " .. tostring(mode))
    end
  end
  count = #requests
end

function request()
  if keyed ~= nil then
    local template = keyed[math.random(count)]
    sent = sent + 1
    template.headers["Idempotency-Key"] =
      string.format("bench-%d-%d-%d-%d", os.time(), seed or 0, sent, math.random(1000000000))
    return wrk.format("POST", "/orders", template.headers, template.body)
  end
  return requests[math.random(count)]
end

function done(summary, latency, _)
  local errors = summary.errors
  io.write(
    string.format(
      'BENCH_RESULT {"duration_us": %d, "requests": %d, "bytes": %d, '
        .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, '
        .. '"status_errors": %d, "timeouts": %d, '
        .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
      summary.duration,
      summary.requests,
      summary.bytes,
      errors.connect,
      errors.read,
      errors.write,
      errors.status,
      errors.timeout,
      latency:percentile(50),
      latency:percentile(90),
      latency:percentile(99),
      latency.mean,
      latency.max
    )
  )
end
