-- Drives a real headless Neovim (an embedded child) with the tandem plugin against the real server:
-- types like a user, records what the plugin draws, and writes the record as JSON for test_nvim.py.
-- Run: nvim --headless -u NONE -l drive.lua   (inputs in $TANDEM_NVIM_TEST, a JSON object)
local input = vim.json.decode(vim.env.TANDEM_NVIM_TEST)
local record = {}
local TIMEOUT = 30000

local chan = vim.fn.jobstart({
  vim.v.progpath,
  "--embed",
  "--headless",
  "-u",
  "NONE",
  "-i",
  "NONE",
  "-n",
  "--cmd",
  "set rtp^=" .. vim.fn.fnameescape(input.plugin),
}, { rpc = true })

local function lua(code, ...)
  return vim.rpcrequest(chan, "nvim_exec_lua", code, { ... })
end

local function keys(text)
  vim.rpcrequest(chan, "nvim_input", text)
end

local function until_true(what, code)
  if not vim.wait(TIMEOUT, function()
    return lua(code)
  end, 20) then
    error("timed out waiting for " .. what)
  end
end

-- The user's typing, one key at a time, well within the client's debounce.
local function type_slowly(text)
  for _, char in ipairs(vim.fn.split(text, "\\zs")) do
    keys(char == "<" and "<lt>" or char)
    vim.wait(30)
  end
end

-- In the child: the plugin set up as a user would, plus observers of what it draws and sends.
lua(
  [[
  local input = ...
  vim.cmd("filetype on")
  require("tandem").setup({
    cmd = input.cmd,
    cmd_env = input.env,
    settings = input.settings,
    debounce_ms = input.debounce_ms,
  })
  vim.cmd.edit(vim.fn.fnameescape(input.file))
  local ns = vim.api.nvim_create_namespace("tandem")
  _G.test = { ghosts = {}, requests = {} }
  function _G.test.ghost()
    local marks = vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
    if #marks == 0 then
      return nil
    end
    local details = marks[1][4]
    local lines = { details.virt_text and details.virt_text[1][1] or "" }
    for _, line in ipairs(details.virt_lines or {}) do
      table.insert(lines, line[1][1])
    end
    return { row = marks[1][2], col = marks[1][3], text = table.concat(lines, "\n"), marks = #marks }
  end
  -- Every distinct ghost text drawn, sampled every 2 ms.
  local last
  vim.uv.new_timer():start(0, 2, vim.schedule_wrap(function()
    local ghost = _G.test.ghost()
    local text = ghost and ghost.text
    if text ~= last then
      last = text
      if ghost then
        table.insert(_G.test.ghosts, ghost)
      end
    end
  end))
  vim.api.nvim_create_autocmd("LspRequest", {
    callback = function(event)
      local request = event.data.request
      table.insert(_G.test.requests, { method = request.method, type = request.type })
    end,
  })
  -- The commands the plugin runs on the server (the item's, and the partial accept reports).
  _G.test.commands = {}
  local lsp = require("tandem.lsp")
  local execute = lsp.execute
  lsp.execute = function(client, command, ...)
    table.insert(_G.test.commands, command)
    return execute(client, command, ...)
  end
  function _G.test.pending()
    local client = require("tandem.lsp").client(0)
    for _, request in pairs(client and client.requests or {}) do
      if request.type == "pending" and request.method == "textDocument/inlineCompletion" then
        return true
      end
    end
    return false
  end
  function _G.test.state()
    return {
      lines = vim.api.nvim_buf_get_lines(0, 0, -1, false),
      cursor = vim.api.nvim_win_get_cursor(0),
      mode = vim.api.nvim_get_mode().mode,
      ghost = _G.test.ghost(),
    }
  end
  -- A picture of window `win` as HTML (Neovim's own :TOhtml), for the README (`make screenshots`).
  function _G.test.html(win, path)
    vim.o.termguicolors = true
    vim.cmd("syntax on")
    local src = vim.api.nvim_win_get_buf(win)
    -- a copy with one more line: TOhtml draws no virtual lines below the last line
    local buf = vim.api.nvim_create_buf(false, true)
    vim.api.nvim_buf_set_lines(buf, 0, -1, false, vim.list_extend(vim.api.nvim_buf_get_lines(src, 0, -1, false), { "" }))
    vim.bo[buf].filetype = vim.bo[src].filetype
    for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(src, ns, 0, -1, { details = true })) do
      local details = mark[4]
      vim.api.nvim_buf_set_extmark(buf, ns, mark[2], mark[3], {
        virt_text = details.virt_text,
        virt_text_pos = details.virt_text_pos,
        virt_lines = details.virt_lines,
      })
    end
    local copy = vim.api.nvim_open_win(buf, false, { relative = "editor", row = 0, col = 0, width = 90, height = 20 })
    -- no line numbers: TOhtml does not indent virtual lines past them
    local html = require("tohtml").tohtml(copy, { title = vim.fn.bufname(src) })
    vim.api.nvim_win_close(copy, true)
    vim.fn.writefile(html, path)
  end
  -- The server's `tandem.status`; nil before it answers.
  function _G.test.status()
    local client = require("tandem.lsp").client(0)
    local reply = client and client:request_sync("workspace/executeCommand", { command = "tandem.status" }, 5000, 0)
    return reply and reply.result
  end
  function _G.test.scratch(name)
    local buf = vim.fn.bufnr("tandem://" .. name)
    if buf == -1 then
      return nil
    end
    return {
      lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false),
      filetype = vim.bo[buf].filetype,
      shown = vim.fn.bufwinid(buf) ~= -1,
    }
  end
]],
  input
)

local ok, err = xpcall(function()
  until_true(
    "the model to load",
    [[
    local status = _G.test.status()
    return status ~= nil and status.model.state == "ready"
  ]]
  )
  -- What the server says about positions: the `tandem/ghostText` notifications echo the request's.
  record.encoding = lua([[
    local client = require("tandem.lsp").client(0)
    local handler = client.handlers["tandem/ghostText"]
    _G.test.notified = {}
    client.handlers["tandem/ghostText"] = function(err, params, ctx)
      table.insert(_G.test.notified, params.position)
      return handler(err, params, ctx)
    end
    local chunk_handler = client.handlers["tandem/assistChunk"]
    _G.test.chunks = {}
    client.handlers["tandem/assistChunk"] = function(err, params, ctx)
      table.insert(_G.test.chunks, params)
      return chunk_handler(err, params, ctx)
    end
    return client.offset_encoding
  ]])

  -- Type a function whose body line has non-ASCII text before the cursor; the suggestion streams.
  keys("Go")
  type_slowly(input.typed)
  until_true("the final suggestion", [[return require("tandem").visible() and not _G.test.pending()]])
  record.before = lua("return _G.test.state()")
  if input.screenshots then
    lua("_G.test.html(0, ...)", input.screenshots .. "/nvim-ghost-text.html")
  end
  record.ghosts = lua("return _G.test.ghosts")
  record.notified = lua("return _G.test.notified")

  -- Keys sent with nvim_input are handled before the next request is answered.
  keys("<M-Right>")
  record.after_word = lua("return _G.test.state()")
  keys("<Tab>")
  record.after_accept = lua("return _G.test.state()")
  record.accept_commands = lua("return _G.test.commands")
  keys("<Esc>u")
  record.undo1 = lua("return _G.test.state()")
  keys("u")
  record.undo2 = lua("return _G.test.state()")

  -- A suggestion on a new line, dismissed; then <Tab> falls back to inserting a tab.
  keys("o")
  type_slowly(input.second)
  until_true("a second suggestion", [[return require("tandem").visible() and not _G.test.pending()]])
  record.before_dismiss = lua("return _G.test.state()")
  keys("<C-]>")
  record.after_dismiss = lua("return _G.test.state()")
  keys("<Tab>")
  record.after_tab = lua("return _G.test.state()")

  -- Leaving insert mode cancels the request in flight.
  lua("_G.test.requests = {}")
  keys("x")
  until_true("a request in flight", "return _G.test.pending()")
  keys("<Esc>")
  vim.wait(1500)
  record.after_leave = lua("return _G.test.state()")
  record.requests = lua("return _G.test.requests")

  -- Explain streams into its scratch split; closing the split (q) cancels it.
  lua("_G.test.requests = {}")
  lua("vim.cmd('4,7TandemExplain')")
  until_true("the explanation to stream", "return #_G.test.chunks >= 3")
  record.explain = lua([[return { _G.test.scratch("explain"), vim.deepcopy(_G.test.chunks) }]])
  lua([[vim.api.nvim_set_current_win(vim.fn.bufwinid(vim.fn.bufnr("tandem://explain")))]])
  keys("q")
  until_true("the cancelled answer", [[return vim.tbl_contains(_G.test.scratch("explain").lines, "---")]])
  record.explained = lua([[return _G.test.scratch("explain")]])
  record.explain_requests = lua("return _G.test.requests")

  -- Yanks: a word, then three lines (lines 4-6 of the file); the server's ring keeps the three lines.
  local ring = "return _G.test.status().recent.chunks"
  record.ring_before = lua(ring)
  keys("4Gyiw")
  keys("3yy")
  until_true("the yanked lines in the ring", "return #_G.test.status().recent.chunks > " .. #record.ring_before)
  record.ring_after = lua(ring)

  lua("vim.cmd('TandemStatus')")
  until_true("the status window", [[return _G.test.scratch("status") ~= nil]])
  record.status = lua([[return _G.test.scratch("status")]])
  lua("vim.cmd('TandemUsage')")
  until_true("the usage window", [[return _G.test.scratch("usage") ~= nil]])
  record.usage = lua([[return _G.test.scratch("usage")]])
  -- Paused completions send nothing while the user types.
  lua("_G.test.requests = {}")
  lua("vim.cmd('TandemToggle')")
  keys("Go")
  type_slowly("total = ")
  vim.wait(500)
  record.paused = { requests = lua("return _G.test.requests"), state = lua("return _G.test.state()") }
  keys("<Esc>")

  lua("vim.cmd('checkhealth tandem')")
  record.health = lua("return vim.api.nvim_buf_get_lines(0, 0, -1, false)")
  record.messages = lua([[return vim.api.nvim_exec2("messages", { output = true }).output]])

  if input.screenshots then
    -- a whole answer for the README's picture (the test above cancels its explain early)
    lua("vim.cmd.buffer(vim.fn.bufnr(...)); vim.cmd('4,7TandemExplain')", input.file)
    if not vim.wait(900000, function()
      return lua([[return vim.tbl_contains(_G.test.scratch("explain").lines, "---")]])
    end, 200) then
      error("timed out waiting for the whole explanation")
    end
    lua([[_G.test.html(vim.fn.bufwinid(vim.fn.bufnr("tandem://explain")), ...)]], input.screenshots .. "/nvim-explain.html")
  end
end, debug.traceback)

if not ok then
  record.error = err
end
vim.fn.jobstop(chan)
local out = assert(io.open(input.result, "w"))
out:write(vim.json.encode(record))
out:close()
