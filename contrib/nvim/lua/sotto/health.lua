-- :checkhealth sotto — vim.health (Neovim 0.8+) or require("health") (0.7).
local M = {}

local h = vim.health or require("health")
local start = h.start or h.report_start
local ok = h.ok or h.report_ok
local warn = h.warn or h.report_warn
local err = h.error or h.report_error
local info = h.info or h.report_info

function M.check()
  start("sotto")
  local sotto = require("sotto")
  local rpc = require("sotto.rpc")
  local path = sotto.config.socket or rpc.default_socket()
  info("socket: " .. path)
  if vim.fn.has("nvim-0.7") == 0 then
    err("Neovim 0.7 or later is needed")
  end
  local uv = vim.uv or vim.loop
  if not uv.fs_stat(path) then
    err("no socket at " .. path, { "start the daemon: systemctl --user start sottod.socket (or run sottod)" })
    return
  end
  local status, e = sotto.connection():call_sync("daemon.status", {}, 5000)
  if e then
    err("sottod does not answer: " .. tostring(rpc.val(e.message)))
    return
  end
  ok(string.format("sottod %s (protocol %s)", tostring(status.version), tostring(status.protocol)))
  local account = rpc.val(status.account)
  if account then
    ok("account: " .. tostring(account.address))
  else
    warn("no account yet", { "create one: sotto account create --relay RELAY NAME" })
  end
  for _, r in ipairs(rpc.val(status.relays) or {}) do
    if r.connected then
      ok("relay connected: " .. tostring(r.url))
    else
      warn("relay not connected: " .. tostring(r.url))
    end
  end
end

return M
