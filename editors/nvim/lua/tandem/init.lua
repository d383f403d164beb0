--- tandem for Neovim: inline ghost text from a local model, explain / debug / refactor, the token ledger.
local api = vim.api
local config = require("tandem.config")

local M = {}

--- Insert-mode keys: the action when a suggestion is shown, else the key's own meaning.
local function map_keys(ghost, keymaps)
  local actions = {
    accept = "<Cmd>lua require('tandem').accept()<CR>",
    accept_word = "<Cmd>lua require('tandem').accept_word()<CR>",
    accept_line = "<Cmd>lua require('tandem').accept_line()<CR>",
    dismiss = "<Cmd>lua require('tandem').dismiss()<CR>",
  }
  for name, action in pairs(actions) do
    local key = keymaps[name]
    if key then
      vim.keymap.set("i", key, function()
        if not ghost.visible() then
          return key
        end
        -- <C-g>u on both sides: the accepted text is its own undo step.
        return name == "dismiss" and action or "<C-g>u" .. action .. "<C-g>u"
      end, { expr = true, desc = "tandem: " .. name:gsub("_", " ") })
    end
  end
end

local function user_commands(ghost, assist)
  local function task(name, nargs, help)
    api.nvim_create_user_command("Tandem" .. name:sub(1, 1):upper() .. name:sub(2), function(cmd)
      assist.run(name, cmd.line1, cmd.line2, cmd.args)
    end, { range = true, nargs = nargs, desc = help })
  end
  task("explain", "*", "tandem: explain the selected lines [question]")
  task("debug", "*", "tandem: find the bug in the selected lines [error text]")
  task("refactor", "+", "tandem: rewrite the selected lines as instructed {instruction}")
  api.nvim_create_user_command("TandemStatus", function()
    assist.report("status")
  end, { desc = "tandem: server, model and counters" })
  api.nvim_create_user_command("TandemUsage", function()
    assist.report("usage")
  end, { desc = "tandem: tokens and cost from the ledger" })
  api.nvim_create_user_command("TandemToggle", function()
    vim.notify("tandem: completions " .. (ghost.toggle() and "on" or "paused"))
  end, { desc = "tandem: pause or resume inline completions" })
end

--- Configure tandem, start its server for matching buffers, and define its keys and commands.
function M.setup(opts)
  if vim.fn.has("nvim-0.10") ~= 1 then
    vim.notify("tandem needs Neovim 0.10 or newer (inline virtual text, vim.lsp.start)", vim.log.levels.ERROR)
    return
  end
  local options = config.set(opts)
  local ghost = require("tandem.ghost")
  local assist = require("tandem.assist")
  local lsp = require("tandem.lsp")
  ghost.enabled = options.enabled
  ghost.highlight()
  local handlers = { ["tandem/ghostText"] = ghost.on_ghost_text, ["tandem/assistChunk"] = assist.on_chunk }

  local group = api.nvim_create_augroup("tandem", { clear = true })
  api.nvim_create_autocmd("FileType", {
    group = group,
    callback = function(event)
      lsp.attach(event.buf, handlers)
    end,
  })
  api.nvim_create_autocmd({ "TextChangedI", "CursorMovedI" }, {
    group = group,
    callback = function(event)
      if lsp.client(event.buf) then
        ghost.on_change()
      end
    end,
  })
  api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, { group = group, callback = ghost.stop })
  -- What you yank is context for the next suggestions (the server keeps three lines or more).
  api.nvim_create_autocmd("TextYankPost", {
    group = group,
    callback = function(event)
      local client = lsp.client(event.buf)
      if client and vim.v.event.operator == "y" then
        local yanked = { vim.uri_from_bufnr(event.buf), table.concat(vim.v.event.regcontents, "\n") }
        lsp.execute(client, { command = "tandem.yanked", arguments = yanked }, event.buf)
      end
    end,
  })
  api.nvim_create_autocmd("ColorScheme", { group = group, callback = ghost.highlight })
  map_keys(ghost, options.keymaps)
  user_commands(ghost, assist)
  -- Buffers opened before setup (lazy loading) attach now.
  for _, buf in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(buf) and vim.bo[buf].filetype ~= "" then
      lsp.attach(buf, handlers)
    end
  end
end

--- Accept the whole suggestion shown at the cursor.
function M.accept()
  require("tandem.ghost").accept("all")
end

--- Accept the suggestion's next word.
function M.accept_word()
  require("tandem.ghost").accept("word")
end

--- Accept the rest of the suggestion's current line (or its next line).
function M.accept_line()
  require("tandem.ghost").accept("line")
end

--- Hide the suggestion until the next keystroke.
function M.dismiss()
  require("tandem.ghost").stop()
end

--- Whether a suggestion is shown at the cursor (for your own mappings).
function M.visible()
  return require("tandem.ghost").visible()
end

--- Pause or resume inline completions; returns whether they are on.
function M.toggle()
  return require("tandem.ghost").toggle()
end

return M
