-- sotto.rpc: one NDJSON JSON-RPC connection to sottod over its Unix socket, with an event
-- subscription that survives daemon restarts (reconnect with backoff, resubscribe from the
-- last seq seen: no gap, no duplicate). Works on Neovim 0.7 and later.

local uv = vim.uv or vim.loop

local M = {}

local BACKOFF_START, BACKOFF_MAX = 50, 2000 -- milliseconds

--- The daemon's socket path, by the daemon's own rule: $SOTTO_SOCKET if absolute, else
--- $XDG_RUNTIME_DIR/sotto/sottod.sock if absolute, else /tmp/sotto-$UID/sottod.sock.
function M.default_socket()
  local override = os.getenv("SOTTO_SOCKET") or ""
  if override:sub(1, 1) == "/" then
    return override
  end
  local runtime = os.getenv("XDG_RUNTIME_DIR") or ""
  if runtime:sub(1, 1) == "/" then
    return runtime .. "/sotto/sottod.sock"
  end
  return string.format("/tmp/sotto-%d/sottod.sock", uv.getuid())
end

--- JSON null decodes to vim.NIL, which is truthy: this turns it into nil.
function M.val(v)
  if v == vim.NIL then
    return nil
  end
  return v
end

local function encode(obj)
  return vim.json.encode(obj)
end

local Conn = {}
Conn.__index = Conn

--- A connection. opts: socket (path), on_event(ev), on_state(connected: bool, message).
function M.new(opts)
  local self = setmetatable({}, Conn)
  self.path = opts.socket or M.default_socket()
  self.on_event = opts.on_event or function() end
  self.on_state = opts.on_state or function() end
  self.next_id = 1
  self.waiting = {}
  self.buffer = ""
  self.connected = false
  self.closed = false
  self.last_seq = nil
  self.subscribed = false
  self.backoff = BACKOFF_START
  self.queue = {}
  return self
end

function Conn:_fail_waiting(message)
  local waiting = self.waiting
  self.waiting = {}
  for _, cb in pairs(waiting) do
    vim.schedule(function()
      cb({ kind = "connection", message = message }, nil)
    end)
  end
end

function Conn:_on_line(line)
  if line:match("^%s*$") then
    return
  end
  local ok, msg = pcall(vim.json.decode, line)
  if not ok or type(msg) ~= "table" then
    return
  end
  if msg.method == "event" then
    local params = M.val(msg.params)
    local ev = params and M.val(params.result)
    if type(ev) ~= "table" then
      return
    end
    if ev.type == "subscription.closed" then
      -- after an overflow, resubscribe from the last seq seen; on shutdown the daemon
      -- closes the connection and the reconnect resubscribes
      self.subscribed = false
      if self.connected and ev.reason ~= "shutdown" then
        self:_subscribe()
      end
      return
    end
    local seq = M.val(ev.seq)
    if type(seq) ~= "number" or (self.last_seq and seq <= self.last_seq) then
      return -- already delivered
    end
    self.last_seq = seq
    vim.schedule(function()
      self.on_event(ev)
    end)
    return
  end
  local id = M.val(msg.id)
  local cb = id and self.waiting[id]
  if not cb then
    return
  end
  self.waiting[id] = nil
  local err = M.val(msg.error)
  vim.schedule(function()
    if err then
      local data = M.val(err.data) or {}
      cb({ code = err.code, kind = M.val(data.kind), message = err.message, data = data }, nil)
    else
      cb(nil, M.val(msg.result))
    end
  end)
end

function Conn:_on_data(data)
  self.buffer = self.buffer .. data
  while true do
    local nl = self.buffer:find("\n", 1, true)
    if not nl then
      break
    end
    local line = self.buffer:sub(1, nl - 1):gsub("\r$", "")
    self.buffer = self.buffer:sub(nl + 1)
    self:_on_line(line)
  end
end

function Conn:_schedule_reconnect()
  if self.closed or self.timer then
    return
  end
  self.timer = uv.new_timer()
  self.timer:start(self.backoff, 0, function()
    self.timer:close()
    self.timer = nil
    self:connect()
  end)
  self.backoff = math.min(self.backoff * 2, BACKOFF_MAX)
end

function Conn:_lost(message)
  local was = self.connected
  self.connected = false
  self.subscribed = false
  self.buffer = ""
  if self.pipe then
    if not self.pipe:is_closing() then
      self.pipe:close()
    end
    self.pipe = nil
  end
  self:_fail_waiting(message)
  if was then
    vim.schedule(function()
      self.on_state(false, message)
    end)
  end
  self:_schedule_reconnect()
end

--- Connects (again); on success resubscribes when events were wanted.
function Conn:connect()
  if self.closed or self.pipe then
    return
  end
  local pipe = uv.new_pipe(false)
  self.pipe = pipe
  pipe:connect(self.path, function(err)
    if err then
      if self.pipe == pipe then
        self.pipe = nil
      end
      if not pipe:is_closing() then
        pipe:close()
      end
      self:_schedule_reconnect()
      return
    end
    self.connected = true
    self.backoff = BACKOFF_START
    pipe:read_start(function(rerr, data)
      if rerr or not data then
        self:_lost(rerr or "sottod closed the connection")
      else
        self:_on_data(data)
      end
    end)
    local queue = self.queue
    self.queue = {}
    for _, entry in ipairs(queue) do
      pipe:write(entry.line)
    end
    if self.want_events then
      self:_subscribe()
    end
    vim.schedule(function()
      self.on_state(true)
    end)
  end)
end

function Conn:_send(method, params, cb)
  local id = self.next_id
  self.next_id = id + 1
  if next(params) == nil then
    params = vim.empty_dict()
  end
  local line = encode({ jsonrpc = "2.0", id = id, method = method, params = params }) .. "\n"
  if cb then
    self.waiting[id] = cb
  end
  if self.connected and self.pipe then
    self.pipe:write(line)
  else
    table.insert(self.queue, { id = id, line = line })
    self:connect()
  end
  return id
end

--- Forgets request `id`: never written if it is still queued, its answer ignored.
function Conn:_forget(id)
  self.waiting[id] = nil
  for i, entry in ipairs(self.queue) do
    if entry.id == id then
      table.remove(self.queue, i)
      return
    end
  end
end

--- Calls `method` with `params`; cb(err, result) on the main loop. err = {code, kind, message, data}.
function Conn:call(method, params, cb)
  return self:_send(method, params or {}, cb or function() end)
end

--- Calls and waits (at most timeout_ms, default 10 s); returns result, err.
function Conn:call_sync(method, params, timeout_ms)
  local done, res, er = false, nil, nil
  local id = self:call(method, params, function(e, r)
    done, res, er = true, r, e
  end)
  local ok = vim.wait(timeout_ms or 10000, function()
    return done
  end, 10)
  if not ok then
    -- A request still queued (the daemon is down) is dropped rather than sent later,
    -- after the caller was told it failed.
    self:_forget(id)
    return nil, { kind = "timeout", message = "no answer from sottod to " .. method }
  end
  return res, er
end

function Conn:_subscribe()
  if self.subscribed then
    return
  end
  self.subscribed = true
  local function subscribe()
    self:_send("events.subscribe", { since = self.last_seq }, function(err)
      if err then
        self.subscribed = false
        vim.notify("sotto: events.subscribe: " .. tostring(err.message), vim.log.levels.ERROR)
      end
    end)
  end
  if self.last_seq == nil then
    -- live from now: the daemon's last_event_seq, then everything after it
    self:_send("daemon.status", {}, function(err, status)
      if err or not status then
        self.subscribed = false
        return
      end
      if self.last_seq == nil then
        self.last_seq = M.val(status.last_event_seq) or 0
      end
      subscribe()
    end)
  else
    subscribe()
  end
end

--- Starts delivering events to on_event (from `since`, or live), across reconnects.
function Conn:subscribe(since)
  self.want_events = true
  if since ~= nil then
    self.last_seq = since
  end
  if self.connected then
    self:_subscribe()
  else
    self:connect()
  end
end

function Conn:close()
  self.closed = true
  if self.timer then
    self.timer:close()
    self.timer = nil
  end
  if self.pipe and not self.pipe:is_closing() then
    self.pipe:close()
  end
  self.pipe = nil
  self.connected = false
end

return M
