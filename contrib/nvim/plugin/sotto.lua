-- Defines :Sotto, :SottoOpen and :SottoSend with the defaults; require("sotto").setup()
-- reconfigures them.
if vim.g.loaded_sotto then
  return
end
vim.g.loaded_sotto = true
require("sotto").setup(vim.g.sotto_setup or {})
