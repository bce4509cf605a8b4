-- The plugin's tests under `nvim --headless`, against real daemons and a relay started by
-- daemon/tests/clients/nvim.rs (SOTTO_TEST_* variables). Prints one line per test and
-- "N passed, M failed"; exits non-zero on any failure.
--   nvim --headless -u NONE -i NONE --cmd 'set rtp^=contrib/nvim' -c 'luafile contrib/nvim/tests/run.lua'

local uv = vim.uv or vim.loop
local sotto = require("sotto")
local rpc = require("sotto.rpc")

local env = function(k)
  return assert(os.getenv(k), "missing " .. k .. ": run through cargo test --workspace nvim_")
end
local CONV = env("SOTTO_TEST_CONV")
local ALICE = env("SOTTO_TEST_ALICE_ADDRESS")
local BOB_SOCKET = env("SOTTO_TEST_BOB_SOCKET")
local alice = rpc.new({ socket = env("SOTTO_TEST_ALICE_SOCKET") })

-- 60 s by default, as the Rust suites: a loaded 2-core machine is five times slower.
local function wait(what, pred, ms)
  if not vim.wait(ms or 60000, pred, 20) then
    error("timed out waiting for " .. what, 2)
  end
end

local function alice_send(text)
  local m, err = alice:call_sync("message.send", { conversation = CONV, text = text }, 30000)
  assert(not err, err and err.message)
  return m
end

local function control(line)
  local pipe = uv.new_pipe(false)
  local answer = nil
  pipe:connect(env("SOTTO_TEST_CONTROL"), function(err)
    assert(not err, err)
    pipe:read_start(function(_, data)
      if data then
        answer = (answer or "") .. data
      end
    end)
    pipe:write(line .. "\n")
  end)
  wait("the harness to " .. line, function()
    return answer and answer:find("\n")
  end, 120000)
  pipe:close()
  assert(answer:match("^ok"), answer)
end

local function buf_lines(buf)
  return vim.api.nvim_buf_get_lines(buf or 0, 0, -1, false)
end

local function count(buf, text)
  local n = 0
  for _, l in ipairs(buf_lines(buf)) do
    if l:find(text, 1, true) then
      n = n + 1
    end
  end
  return n
end

local function alice_texts()
  local list = assert(alice:call_sync("message.list", { conversation = CONV, limit = 1000 }, 30000))
  local texts = {}
  for _, m in ipairs(list) do
    texts[#texts + 1] = m.text
  end
  return texts
end

local function alice_has(text)
  for _, t in ipairs(alice_texts()) do
    if t == text then
      return true
    end
  end
  return false
end

local tests = {}
local function test(name, f)
  tests[#tests + 1] = { name = name, f = f }
end

local notified = {}
vim.notify = function(msg)
  notified[#notified + 1] = msg
end

test("the default socket follows the daemon's rule", function()
  assert(rpc.default_socket() == BOB_SOCKET, rpc.default_socket())
  assert(rpc.val(vim.NIL) == nil and rpc.val(false) == false and rpc.val(0) == 0)
end)

test("setup defines the commands", function()
  sotto.setup({})
  for _, c in ipairs({ "Sotto", "SottoOpen", "SottoSend" }) do
    assert(vim.fn.exists(":" .. c) == 2, c)
  end
end)

local conv_buf
test(":SottoOpen by address shows the history in sotto://ID", function()
  alice_send("n1 history\nsecond line")
  wait("bob to receive n1", function()
    local list = sotto.call("message.list", { conversation = CONV, limit = 1000 })
    return #list > 0
  end)
  vim.cmd("SottoOpen " .. ALICE)
  conv_buf = vim.api.nvim_get_current_buf()
  assert(vim.api.nvim_buf_get_name(conv_buf) == "sotto://" .. CONV, vim.api.nvim_buf_get_name(conv_buf))
  assert(count(conv_buf, "n1 history") == 1, table.concat(buf_lines(conv_buf), "\n"))
  assert(count(conv_buf, "second line") == 1)
  assert(count(conv_buf, ALICE .. ":") >= 1)
  assert(count(conv_buf, "vim.NIL") == 0 and count(conv_buf, "userdata") == 0)
end)

test("live messages are appended without moving a reader's cursor", function()
  vim.api.nvim_set_current_buf(conv_buf)
  alice_send("n2 live")
  wait("n2 in the buffer", function()
    return count(conv_buf, "n2 live") == 1
  end)
  vim.api.nvim_win_set_cursor(0, { 1, 0 })
  alice_send("n3 while reading above")
  wait("n3 in the buffer", function()
    return count(conv_buf, "n3 while reading above") == 1
  end)
  assert(vim.api.nvim_win_get_cursor(0)[1] == 1, "the cursor moved")
  local last = vim.api.nvim_buf_line_count(conv_buf)
  vim.api.nvim_win_set_cursor(0, { last, 0 })
  alice_send("n4 following")
  wait("n4 in the buffer", function()
    return count(conv_buf, "n4 following") == 1
  end)
  assert(vim.api.nvim_win_get_cursor(0)[1] == vim.api.nvim_buf_line_count(conv_buf), "did not follow the end")
end)

test(":SottoSend sends to the current conversation, shown once", function()
  vim.api.nvim_set_current_buf(conv_buf)
  vim.cmd("SottoSend hello from nvim")
  wait("alice to receive it", function()
    return alice_has("hello from nvim")
  end)
  wait("the own message in the buffer", function()
    return count(conv_buf, "hello from nvim") == 1
  end)
  vim.wait(300) -- a late message.created must not add it again
  assert(count(conv_buf, "hello from nvim") == 1)
end)

test("the compose split sends on :w", function()
  vim.api.nvim_set_current_buf(conv_buf)
  vim.cmd("normal i")
  vim.cmd("stopinsert")
  local buf = vim.api.nvim_get_current_buf()
  assert(vim.api.nvim_buf_get_name(buf) == "sotto-compose://" .. CONV, vim.api.nvim_buf_get_name(buf))
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "composed in", "two lines" })
  vim.cmd("write")
  wait("alice to receive the composed message", function()
    return alice_has("composed in\ntwo lines")
  end)
  assert(table.concat(buf_lines(buf), "") == "", "the compose buffer is cleared")
  vim.cmd("close")
end)

test("a conversation's state is shown unless active, a broken one with its reason", function()
  assert(sotto._state_word({ state = "active" }) == "")
  assert(sotto._state_word({ state = "pending" }) == "pending")
  assert(sotto._state_word({ state = "broken", state_reason = "no GroupInfo at the relay" })
    == "broken: no GroupInfo at the relay")
  assert(sotto._state_word({ state = "broken", state_reason = vim.NIL }) == "broken")
end)

test(":Sotto lists conversations and <CR> opens one", function()
  vim.cmd("Sotto")
  local list = vim.api.nvim_get_current_buf()
  assert(vim.api.nvim_buf_get_name(list) == "sotto://conversations")
  local row
  for i, l in ipairs(buf_lines(list)) do
    if l:find(CONV, 1, true) then
      row = i
    end
  end
  assert(row, table.concat(buf_lines(list), "\n"))
  assert(count(list, ALICE) == 1, "the direct conversation is titled by the peer")
  vim.api.nvim_win_set_cursor(0, { row, 0 })
  vim.cmd("execute \"normal \\<CR>\"")
  assert(vim.api.nvim_get_current_buf() == conv_buf)
end)

test("vim.notify for a message in a conversation not shown", function()
  vim.cmd("Sotto")
  notified = {}
  alice_send("n5 elsewhere")
  wait("a notification", function()
    for _, n in ipairs(notified) do
      if n:find("n5 elsewhere", 1, true) then
        return true
      end
    end
    return false
  end)
  wait("n5 in the conversation buffer too", function()
    return count(conv_buf, "n5 elsewhere") == 1
  end)
end)

test("events continue across a daemon restart: no gap, no repeat", function()
  vim.api.nvim_set_current_buf(conv_buf)
  control("restart bob")
  alice_send("n6 after restart")
  wait("n6 in the buffer", function()
    return count(conv_buf, "n6 after restart") == 1
  end, 60000)
  control("stop bob")
  alice_send("n7 while down")
  control("start bob")
  wait("n7 in the buffer", function()
    return count(conv_buf, "n7 while down") == 1
  end, 60000)
  for _, t in ipairs({ "n1 history", "n2 live", "n3 while", "n4 following", "n5 elsewhere", "n6 after" }) do
    assert(count(conv_buf, t) == 1, t .. " appears " .. count(conv_buf, t) .. " times")
  end
  vim.cmd("SottoSend after the restart")
  wait("alice to receive it", function()
    return alice_has("after the restart")
  end)
end)

test("a timed-out call is never sent later", function()
  control("stop bob")
  local conn = sotto.connection()
  local _, err = conn:call_sync("message.send", { conversation = CONV, text = "timed out, never sent" }, 1000)
  assert(err and err.kind == "timeout", vim.inspect(err))
  control("start bob")
  wait("a reconnect", function()
    local _, e = conn:call_sync("daemon.status", {}, 1000)
    return e == nil
  end, 60000)
  sotto.call("message.send", { conversation = CONV, text = "sentinel n8" })
  wait("alice to receive the sentinel", function()
    return alice_has("sentinel n8")
  end)
  assert(not alice_has("timed out, never sent"))
end)

test(":checkhealth sotto", function()
  vim.cmd("checkhealth sotto")
  local text = table.concat(buf_lines(0), "\n")
  assert(text:find("sottod 0", 1, true), text)
  assert(text:find(env("SOTTO_TEST_BOB_ADDRESS"), 1, true), text)
  assert(not text:find("ERROR"), text)
  vim.cmd("tabclose")
end)

test(":help sotto", function()
  -- helptags into a copy (the repository's doc/ gets no tags file)
  local dir = env("HOME") .. "/nvim-help"
  vim.fn.mkdir(dir .. "/doc", "p")
  vim.fn.writefile(vim.fn.readfile(env("SOTTO_TEST_REPO") .. "/contrib/nvim/doc/sotto.txt"), dir .. "/doc/sotto.txt")
  vim.opt.runtimepath:append(dir)
  vim.cmd("helptags " .. vim.fn.fnameescape(dir .. "/doc"))
  vim.cmd("help sotto")
  assert(vim.bo.filetype == "help")
  assert(table.concat(buf_lines(0), "\n"):find(":SottoOpen", 1, true))
  vim.cmd("close")
end)

local passed, failed = 0, 0
for _, t in ipairs(tests) do
  local ok, err = xpcall(t.f, debug.traceback)
  if ok then
    passed = passed + 1
    io.stdout:write("ok - " .. t.name .. "\n")
  else
    failed = failed + 1
    io.stdout:write("not ok - " .. t.name .. "\n" .. tostring(err) .. "\n")
  end
end
io.stdout:write(string.format("%d passed, %d failed\n", passed, failed))
io.stdout:flush()
vim.cmd(failed == 0 and "qall!" or "cquit!")
