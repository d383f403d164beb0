--- Inline ghost text: request on typing, draw what the server streams, accept or dismiss it.
local api = vim.api
local config = require("tandem.config")
local lsp = require("tandem.lsp")

local M = {}

M.ns = api.nvim_create_namespace("tandem")
M.enabled = true

local HIGHLIGHT = "TandemGhostText"
local AUTOMATIC = 2 -- InlineCompletionTriggerKind.Automatic
local REQUEST_CANCELLED = -32800

local timer = assert(vim.uv.new_timer())
--- The suggestion on screen: {buf, row, col (bytes), tick, text, item?, client_id}.
local shown = nil
--- The request in flight: {id, client_id, buf, row, col, tick, position, version, uri}.
local pending = nil

local function cursor()
  local pos = api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

--- Whether the cursor still stands where `state` was made, on the same text.
local function here(state)
  if state == nil or api.nvim_get_current_buf() ~= state.buf then
    return false
  end
  local row, col = cursor()
  return row == state.row and col == state.col and api.nvim_buf_get_changedtick(state.buf) == state.tick
end

local function clear()
  if shown and api.nvim_buf_is_valid(shown.buf) then
    api.nvim_buf_clear_namespace(shown.buf, M.ns, 0, -1)
  end
  shown = nil
end

local function cancel()
  timer:stop()
  local request = pending
  pending = nil
  local client = request and vim.lsp.get_client_by_id(request.client_id)
  if client then
    lsp.call(client, "cancel_request", request.id)
  end
end

--- Draw `text` at the cursor: the first line inline, the others as virtual lines below.
local function render(text, item, client_id)
  clear()
  if text == "" then
    return
  end
  local buf = api.nvim_get_current_buf()
  local row, col = cursor()
  local lines = vim.split(text, "\n", { plain = true })
  local opts = { virt_text = { { lines[1], HIGHLIGHT } }, virt_text_pos = "inline" }
  if #lines > 1 then
    opts.virt_lines = vim.tbl_map(function(line)
      return { { line, HIGHLIGHT } }
    end, vim.list_slice(lines, 2))
  end
  api.nvim_buf_set_extmark(buf, M.ns, row, col, opts)
  shown = {
    buf = buf,
    row = row,
    col = col,
    tick = api.nvim_buf_get_changedtick(buf),
    text = text,
    item = item,
    client_id = client_id,
  }
end

--- The ghost text of an item; nil unless it applies at the request's position (tandem answers
--- there unless asked to extend a completion-menu item, which this client never sends).
local function item_text(item, request)
  local range = item.range
  if type(item.insertText) ~= "string" then
    return nil
  end
  local at = request.position
  if range and not (vim.deep_equal(range.start, at) and vim.deep_equal(range["end"], at)) then
    return nil
  end
  return item.insertText
end

local function on_result(request, err, result)
  if pending ~= request then
    return -- superseded or cancelled
  end
  pending = nil
  if err then
    if err.code ~= REQUEST_CANCELLED then
      vim.lsp.log.warn("tandem inline completion failed", err)
    end
    return
  end
  if not here(request) then
    return
  end
  local items = type(result) == "table" and (result.items or result) or {}
  local text = items[1] and item_text(items[1], request)
  if text then
    render(text, items[1], request.client_id)
  else
    clear()
  end
end

local function send()
  local buf = api.nvim_get_current_buf()
  if not M.enabled or api.nvim_get_mode().mode:sub(1, 1) ~= "i" then
    return
  end
  if here(pending) or (shown and shown.item and here(shown)) then
    return
  end
  local client = lsp.client(buf)
  if not client then
    return
  end
  cancel()
  local row, col = cursor()
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = AUTOMATIC }
  local request
  local ok, id = lsp.call(client, "request", "textDocument/inlineCompletion", params, function(err, result)
    on_result(request, err, result)
  end, buf)
  if ok and id then
    request = {
      id = id,
      client_id = client.id,
      buf = buf,
      row = row,
      col = col,
      -- read after the request: sending it flushed the pending didChange
      tick = api.nvim_buf_get_changedtick(buf),
      version = vim.lsp.util.buf_versions[buf],
      position = params.position,
      uri = params.textDocument.uri,
    }
    pending = request
  end
end

--- Handler for `tandem/ghostText`: the suggestion so far for the request in flight.
function M.on_ghost_text(_, params)
  local request = pending
  if
    request
    and params.uri == request.uri
    and params.version == request.version
    and vim.deep_equal(params.position, request.position)
    and here(request)
  then
    render(params.text, nil, request.client_id)
  end
end

--- The text typed since `shown` was drawn when it is the start of the suggestion; what is left of it.
local function typed_ahead(row, col)
  if api.nvim_get_current_buf() ~= shown.buf or api.nvim_buf_get_changedtick(shown.buf) == shown.tick then
    return nil
  end
  if row < shown.row or (row == shown.row and col <= shown.col) then
    return nil
  end
  local ok, typed = pcall(api.nvim_buf_get_text, shown.buf, shown.row, shown.col, row, col, {})
  typed = ok and table.concat(typed, "\n") or nil
  if typed and vim.startswith(shown.text, typed) then
    return shown.text:sub(#typed + 1)
  end
end

--- On TextChangedI / CursorMovedI: keep, shorten or clear the ghost text, then ask again after the debounce.
function M.on_change()
  if shown and not here(shown) then
    local rest = typed_ahead(cursor())
    if rest and rest ~= "" then
      render(rest, shown.item, shown.client_id)
    else
      clear()
    end
  end
  timer:stop()
  if M.enabled then
    timer:start(config.options.debounce_ms, 0, vim.schedule_wrap(send))
  end
end

--- Stop the request in flight and hide the ghost text until the next keystroke.
function M.stop()
  cancel()
  clear()
end

--- Whether a suggestion is shown at the cursor.
function M.visible()
  return here(shown)
end

local WORD = "[%w_\128-\255]+"
local PUNCT = "[^%w_%s\128-\255]+"

--- The part of `text` that `kind` accepts: "all", "word" or "line".
local function part(text, kind)
  if kind == "word" then
    local lead = text:match("^\n?[ \t]*")
    local rest = text:sub(#lead + 1)
    return lead .. (rest:match("^" .. WORD) or rest:match("^" .. PUNCT) or "")
  elseif kind == "line" then
    return text:match("^[^\n]+") or text:match("^\n[^\n]*")
  end
  return text
end

--- Tell the server how much of the item is in the document once part of it, `taken`, was accepted:
--- the length of its start now inserted, in the client's position units (bytes in utf-8).
local function report_partial(state, taken)
  local item = state.item
  local client = vim.lsp.get_client_by_id(state.client_id)
  if not (client and item and item.command and type(item.insertText) == "string") then
    return
  end
  local accepted = #item.insertText - #state.text + taken
  if client.offset_encoding ~= "utf-8" then
    accepted = vim.str_utfindex(item.insertText:sub(1, accepted), client.offset_encoding)
  end
  local command = { command = "tandem.partiallyAccepted", arguments = { item.command.arguments[1], accepted } }
  lsp.execute(client, command, state.buf)
end

--- Insert the shown suggestion (or its next word or line) at the cursor, as one undo step.
function M.accept(kind)
  if not M.visible() then
    return
  end
  local state = shown
  local text = part(state.text, kind or "all")
  local lines = vim.split(text, "\n", { plain = true })
  api.nvim_buf_set_text(state.buf, state.row, state.col, state.row, state.col, lines)
  local row = state.row + #lines - 1
  local col = (#lines == 1 and state.col or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { row + 1, col })
  if #text < #state.text then
    render(state.text:sub(#text + 1), state.item, state.client_id)
    report_partial(state, #text)
    return
  end
  clear()
  local client = vim.lsp.get_client_by_id(state.client_id)
  if client and state.item and state.item.command then
    lsp.execute(client, state.item.command, state.buf)
  end
end

--- Pause or resume completions; returns whether they are on.
function M.toggle()
  M.enabled = not M.enabled
  if not M.enabled then
    M.stop()
  end
  return M.enabled
end

--- Link the ghost-text highlight to Comment unless the colour scheme sets it.
function M.highlight()
  api.nvim_set_hl(0, HIGHLIGHT, { link = "Comment", default = true })
end

return M
