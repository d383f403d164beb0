--- Options of the plugin, as given to setup() and filled in with defaults.
local M = {}

M.defaults = {
  -- The server command; `tandem serve` from the venv tandem is installed in.
  cmd = { "tandem", "serve" },
  -- Extra environment for the server process (nil: Neovim's own).
  cmd_env = nil,
  -- The server's settings object: initializationOptions and workspace/configuration section `tandem`.
  settings = {},
  -- Filetypes to attach to; nil: every buffer that is a file.
  filetypes = nil,
  -- Milliseconds between the last keystroke and the request (the server debounces too).
  debounce_ms = 50,
  -- Completions on at start (`:TandemToggle` pauses and resumes them).
  enabled = true,
  -- Insert-mode keys; false leaves a key unmapped.
  keymaps = {
    accept = "<Tab>",
    accept_word = "<M-Right>",
    accept_line = "<M-Down>",
    dismiss = "<C-]>",
  },
}

M.options = vim.deepcopy(M.defaults)

--- Merge user options over the defaults.
function M.set(opts)
  M.options = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts or {})
  -- Lists replace rather than merge: a shorter cmd must not keep the default's tail.
  if opts and opts.cmd then
    M.options.cmd = opts.cmd
  end
  if opts and opts.filetypes then
    M.options.filetypes = opts.filetypes
  end
  return M.options
end

return M
