-- sotto.nvim: Sotto conversations inside Neovim, a thin client of sottod's socket.
-- require("sotto").setup({ socket = nil, notify = true })

local rpc = require("sotto.rpc")
local val = rpc.val

local M = {}

M.config = { socket = nil, notify = true, history = 200 }

-- conversation id -> { buf = bufnr, seen = { [message_id] = true } }
local views = {}
-- list buffer: bufnr -> { [line] = conversation id }
local list_lines = {}
local list_buf = nil
local conn = nil

local function notify(msg, level)
  vim.notify(msg, level or vim.log.levels.INFO, { title = "sotto" })
end

local function errmsg(err)
  if type(err) ~= "table" then
    return tostring(err)
  end
  local kind = val(err.kind)
  return (val(err.message) or "error") .. (kind and (" (" .. kind .. ")") or "")
end

--- The connection, created on first use.
function M.connection()
  if not conn then
    conn = rpc.new({
      socket = M.config.socket,
      on_event = function(ev)
        M._on_event(ev)
      end,
      on_state = function(connected, message)
        if not connected then
          notify("sottod went away (" .. tostring(message) .. "); reconnecting", vim.log.levels.WARN)
        end
      end,
    })
    conn:subscribe(nil)
  end
  return conn
end

--- A synchronous call; raises a Lua error with the daemon's message on failure.
function M.call(method, params)
  local result, err = M.connection():call_sync(method, params or {}, 15000)
  if err then
    error("sotto: " .. method .. ": " .. errmsg(err), 0)
  end
  return result
end

local function fmt_time(t)
  t = val(t)
  if type(t) ~= "string" then
    return "     "
  end
  return t:match("T(%d%d:%d%d)") or t
end

local function message_lines(m)
  local text = val(m.text) or ""
  local sender = val(m.sender) or "?"
  local state = val(m.state)
  local prefix = string.format("[%s] %s: ", fmt_time(val(m.sent_at) or val(m.received_at)), sender)
  local lines = {}
  for i, part in ipairs(vim.split(text, "\n", { plain = true })) do
    lines[#lines + 1] = (i == 1 and prefix or string.rep(" ", #prefix)) .. part
  end
  if state == "failed" then
    lines[#lines] = lines[#lines] .. "  [failed]"
  end
  return lines
end

local function set_lines(buf, first, last, lines)
  vim.api.nvim_buf_set_option(buf, "modifiable", true)
  vim.api.nvim_buf_set_lines(buf, first, last, false, lines)
  vim.api.nvim_buf_set_option(buf, "modifiable", false)
  vim.api.nvim_buf_set_option(buf, "modified", false)
end

--- Appends a message to its conversation's buffer (once per message id). Windows whose
--- cursor was on the last line follow the new end; others keep their place.
local function append_message(view, m)
  local id = val(m.id)
  if id and view.seen[id] then
    return
  end
  if val(m.kind) and val(m.kind) ~= "text" then
    return -- kinds we do not know are skipped
  end
  if id then
    view.seen[id] = true
  end
  local buf = view.buf
  if not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  local count = vim.api.nvim_buf_line_count(buf)
  local empty = count == 1 and vim.api.nvim_buf_get_lines(buf, 0, 1, false)[1] == ""
  local following = {}
  for _, win in ipairs(vim.fn.win_findbuf(buf)) do
    if vim.api.nvim_win_get_cursor(win)[1] == count then
      following[#following + 1] = win
    end
  end
  if empty then
    set_lines(buf, 0, -1, message_lines(m))
  else
    set_lines(buf, -1, -1, message_lines(m))
  end
  local new_count = vim.api.nvim_buf_line_count(buf)
  for _, win in ipairs(following) do
    vim.api.nvim_win_set_cursor(win, { new_count, 0 })
  end
end

local function conversation_title(c)
  local name = val(c.name)
  if name and name ~= "" then
    return name
  end
  local members = val(c.members) or {}
  local me = M._me
  for _, a in ipairs(members) do
    if a ~= me then
      return a
    end
  end
  return val(c.id) or "?"
end

function M._on_event(ev)
  local t = ev.type
  if t == "message.received" or t == "message.created" then
    local m = val(ev.message)
    if type(m) ~= "table" then
      return
    end
    local conv = val(m.conversation)
    local view = views[conv]
    if view then
      append_message(view, m)
    end
    if t == "message.received" and M.config.notify then
      local cur = vim.api.nvim_get_current_buf()
      if not (view and view.buf == cur) then
        notify(string.format("%s: %s", val(m.sender) or "?", val(m.text) or ""))
      end
    end
    if list_buf and vim.api.nvim_buf_is_valid(list_buf) then
      M.refresh_list(true)
    end
  elseif t and t:match("^conversation%.") then
    if list_buf and vim.api.nvim_buf_is_valid(list_buf) then
      M.refresh_list(true)
    end
  end
end

-- The conversation list -------------------------------------------------------------------

--- A conversation's state when it is not the usual `active` ("pending", "left", "removed",
--- "broken: <the daemon's state_reason>"), else "".
function M._state_word(c)
  local state = val(c.state)
  if state == nil or state == "active" then
    return ""
  end
  local reason = val(c.state_reason)
  if state == "broken" and type(reason) == "string" and reason ~= "" then
    return "broken: " .. reason
  end
  return state
end

local function render_list(convs)
  local lines, map = {}, {}
  for _, c in ipairs(convs) do
    local unread = val(c.unread)
    local badge = (type(unread) == "number" and unread > 0) and string.format("(%d)", unread) or ""
    local state = M._state_word(c)
    lines[#lines + 1] = string.format(
      "%-5s %-40s %-6s %s%s",
      badge,
      conversation_title(c),
      val(c.kind) or "",
      val(c.id),
      state ~= "" and ("  [" .. state .. "]") or ""
    )
    map[#lines] = val(c.id)
  end
  if #lines == 0 then
    lines = { "no conversations yet" }
  end
  if list_buf and vim.api.nvim_buf_is_valid(list_buf) then
    list_lines[list_buf] = map
    set_lines(list_buf, 0, -1, lines)
  end
end

--- Redraws the conversation list: synchronously, or (async = true) when the answer comes.
function M.refresh_list(async)
  if async then
    M.connection():call("conversation.list", {}, function(err, convs)
      if not err then
        render_list(convs)
      end
    end)
  else
    render_list(M.call("conversation.list", {}))
  end
end

--- :Sotto — the conversation list (unread counts; <CR> opens).
function M.list()
  M._me = val((M.call("daemon.status", {}).account or {}).address)
  if not (list_buf and vim.api.nvim_buf_is_valid(list_buf)) then
    list_buf = vim.api.nvim_create_buf(true, true)
    vim.api.nvim_buf_set_name(list_buf, "sotto://conversations")
    vim.api.nvim_buf_set_option(list_buf, "buftype", "nofile")
    vim.api.nvim_buf_set_option(list_buf, "swapfile", false)
    vim.api.nvim_buf_set_option(list_buf, "filetype", "sotto-list")
    vim.api.nvim_buf_set_keymap(list_buf, "n", "<CR>", "", {
      noremap = true,
      callback = function()
        local id = (list_lines[list_buf] or {})[vim.api.nvim_win_get_cursor(0)[1]]
        if id then
          M.open(id)
        end
      end,
    })
  end
  vim.api.nvim_set_current_buf(list_buf)
  M.refresh_list()
  return list_buf
end

-- A conversation ----------------------------------------------------------------------------

--- :SottoOpen CONV — buffer sotto://ID with the history and live messages.
function M.open(conv)
  local c = M.call("conversation.get", { conversation = conv })
  M._me = M._me or val((M.call("daemon.status", {}).account or {}).address)
  local id = val(c.id)
  local view = views[id]
  if view and vim.api.nvim_buf_is_valid(view.buf) then
    vim.api.nvim_set_current_buf(view.buf)
    return view.buf
  end
  local buf = vim.api.nvim_create_buf(true, true)
  vim.api.nvim_buf_set_name(buf, "sotto://" .. id)
  vim.api.nvim_buf_set_option(buf, "buftype", "nofile")
  vim.api.nvim_buf_set_option(buf, "swapfile", false)
  vim.api.nvim_buf_set_option(buf, "filetype", "sotto")
  vim.api.nvim_buf_set_var(buf, "sotto_conversation", id)
  vim.api.nvim_buf_set_var(buf, "sotto_title", conversation_title(c))
  view = { buf = buf, seen = {} }
  views[id] = view
  vim.api.nvim_buf_set_keymap(buf, "n", "i", "", {
    noremap = true,
    callback = function()
      M.compose(id)
    end,
  })
  vim.api.nvim_create_autocmd("BufWipeout", {
    buffer = buf,
    callback = function()
      views[id] = nil
    end,
  })
  set_lines(buf, 0, -1, {})
  local history = M.call("message.list", { conversation = id, limit = M.config.history })
  for _, m in ipairs(history) do
    append_message(view, m)
  end
  vim.api.nvim_set_current_buf(buf)
  vim.api.nvim_win_set_cursor(0, { vim.api.nvim_buf_line_count(buf), 0 })
  -- Mark it read where the daemon supports it (conversation.mark_read).
  M.connection():call("conversation.mark_read", { conversation = id }, function() end)
  return buf
end

local function current_conversation()
  local ok, id = pcall(vim.api.nvim_buf_get_var, 0, "sotto_conversation")
  if ok then
    return id
  end
  return nil
end

--- Sends `text` to conversation `conv` (default: the current conversation buffer's).
function M.send(text, conv)
  conv = conv or current_conversation()
  if not conv then
    error("sotto: not in a conversation buffer (use :SottoOpen CONV)", 0)
  end
  if text == nil or text == "" then
    error("sotto: nothing to send", 0)
  end
  local m = M.call("message.send", { conversation = conv, text = text })
  local view = views[conv]
  if view then
    append_message(view, m)
  end
  return m
end

--- A compose split for `conv`: `:w` or <C-s> sends the buffer and clears it.
function M.compose(conv)
  conv = conv or current_conversation()
  local name = "sotto-compose://" .. conv
  local buf = vim.fn.bufnr(name)
  if buf == -1 then
    buf = vim.api.nvim_create_buf(false, false)
    vim.api.nvim_buf_set_name(buf, name)
    vim.api.nvim_buf_set_option(buf, "buftype", "acwrite")
    vim.api.nvim_buf_set_option(buf, "swapfile", false)
    vim.api.nvim_buf_set_option(buf, "bufhidden", "hide")
    vim.api.nvim_buf_set_option(buf, "filetype", "sotto-compose")
    vim.api.nvim_buf_set_var(buf, "sotto_conversation", conv)
    local function submit()
      local text = table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), "\n")
      text = text:gsub("%s+$", "")
      if text == "" then
        return
      end
      local ok, err = pcall(M.send, text, conv)
      if not ok then
        notify(tostring(err), vim.log.levels.ERROR)
        return
      end
      vim.api.nvim_buf_set_lines(buf, 0, -1, false, {})
      vim.api.nvim_buf_set_option(buf, "modified", false)
    end
    vim.api.nvim_create_autocmd("BufWriteCmd", { buffer = buf, callback = submit })
    for _, mode in ipairs({ "n", "i" }) do
      vim.api.nvim_buf_set_keymap(buf, mode, "<C-s>", "", { noremap = true, callback = submit })
    end
  end
  local win = vim.fn.bufwinid(buf)
  if win == -1 then
    vim.cmd("belowright 5split")
    vim.api.nvim_win_set_buf(0, buf)
  else
    vim.api.nvim_set_current_win(win)
  end
  vim.cmd("startinsert")
  return buf
end

local function define_commands()
  vim.api.nvim_create_user_command("Sotto", function()
    M.list()
  end, { desc = "Sotto: the conversation list" })
  vim.api.nvim_create_user_command("SottoOpen", function(o)
    M.open(o.args)
  end, { nargs = 1, desc = "Sotto: open a conversation (id, address or name)" })
  vim.api.nvim_create_user_command("SottoSend", function(o)
    M.send(o.args)
  end, { nargs = "+", desc = "Sotto: send to the current conversation" })
end

--- setup({socket = PATH, notify = true, history = 200}): configures and defines the commands.
function M.setup(opts)
  M.config = vim.tbl_extend("force", M.config, opts or {})
  if conn and opts and opts.socket and opts.socket ~= conn.path then
    conn:close()
    conn = nil
  end
  define_commands()
end

--- For :checkhealth and tests.
function M._state()
  return { conn = conn, views = views }
end

return M
