--- Explain / debug / refactor, status and usage: server replies shown in scratch splits.
local api = vim.api
local lsp = require("tandem.lsp")

local M = {}

--- Assist runs in flight by their argument id: {buf (the scratch buffer), client_id, request_id}.
local running = {}
local runs = 0

--- Cancel the runs writing into `buf`; `drop` forgets them, else their (cancelled) answer still lands there.
local function cancel_runs(buf, drop)
  for id, run in pairs(running) do
    if run.buf == buf then
      if drop then
        running[id] = nil
      end
      local client = vim.lsp.get_client_by_id(run.client_id)
      if client then
        lsp.call(client, "cancel_request", run.request_id)
      end
    end
  end
end

--- The scratch buffer `tandem://<name>`, shown in a split; the cursor stays where it was.
local function scratch(name)
  local uri = "tandem://" .. name
  local buf = vim.fn.bufnr(uri)
  if buf == -1 then
    buf = api.nvim_create_buf(false, true)
    api.nvim_buf_set_name(buf, uri)
    vim.bo[buf].filetype = "markdown"
    vim.keymap.set("n", "q", "<Cmd>close<CR>", { buffer = buf, desc = "Close the tandem window" })
    -- Closing the window stops the reply being written into it.
    api.nvim_create_autocmd("BufWinLeave", {
      buffer = buf,
      callback = function()
        cancel_runs(buf, false)
      end,
    })
  end
  if vim.fn.bufwinid(buf) == -1 then
    local from = api.nvim_get_current_win()
    vim.cmd(vim.o.columns >= 120 and "botright vsplit" or "botright split")
    api.nvim_win_set_buf(0, buf)
    vim.wo.wrap = true
    api.nvim_set_current_win(from)
  end
  return buf
end

local function set_lines(buf, lines)
  api.nvim_buf_set_lines(buf, 0, -1, false, lines)
end

--- Append streamed text to the end of `buf` and keep its windows scrolled to it.
local function append(buf, text)
  local last = api.nvim_buf_line_count(buf) - 1
  local tail = #api.nvim_buf_get_lines(buf, last, last + 1, false)[1]
  api.nvim_buf_set_text(buf, last, tail, last, tail, vim.split(text, "\n", { plain = true }))
  for _, win in ipairs(vim.fn.win_findbuf(buf)) do
    api.nvim_win_set_cursor(win, { api.nvim_buf_line_count(buf), 0 })
  end
end

--- Handler for `tandem/assistChunk`: the next piece of an explain / debug / refactor reply, or the notice
--- that comes before it.
function M.on_chunk(_, params)
  local run = running[params.id]
  if not (run and api.nvim_buf_is_valid(run.buf)) then
    return
  end
  if type(params.notice) == "string" and params.notice ~= "" then
    run.notice = params.notice
    append(run.buf, "> " .. params.notice .. "\n\n")
  elseif type(params.text) == "string" then
    append(run.buf, params.text)
  end
end

local function client_or_warn(buf)
  local client = lsp.client(buf)
  if not client then
    vim.notify("tandem: no server is attached to this buffer (see :checkhealth tandem)", vim.log.levels.WARN)
  end
  return client
end

--- The LSP range of whole lines `line1`..`line2` (1-based) in the client's position encoding.
local function line_range(buf, line1, line2, encoding)
  local last = api.nvim_buf_get_lines(buf, line2 - 1, line2, false)[1] or ""
  return {
    start = { line = line1 - 1, character = 0 },
    ["end"] = { line = line2 - 1, character = vim.lsp.util.character_offset(buf, line2 - 1, #last, encoding) },
  }
end

--- The diagnostics on lines `line1`..`line2`, one string each, for `:TandemDebug`.
local function diagnostics(buf, line1, line2)
  local messages = {}
  for _, d in ipairs(vim.diagnostic.get(buf)) do
    if d.lnum >= line1 - 1 and d.lnum <= line2 - 1 then
      table.insert(messages, ("line %d: %s"):format(d.lnum + 1, d.message))
    end
  end
  return messages
end

--- The footer under a finished reply: who answered, why the route changed (unless `notice` said it above), and
--- the notes.
local function footer(result, notice)
  local lines = { "", "---", ("*%s · %s · %s*"):format(result.backend, result.model, result.outcome) }
  if type(result.reason) == "string" and result.reason ~= notice then
    table.insert(lines, "Route: " .. result.reason)
  end
  if result.applied == true then
    table.insert(lines, "Applied to the file: `u` there takes it back.")
  end
  for _, note in ipairs(type(result.notes) == "table" and result.notes or {}) do
    table.insert(lines, "- " .. tostring(note))
  end
  return lines
end

--- Run `tandem.<task>` (explain, debug, refactor) on lines `line1`..`line2` of the current buffer.
function M.run(task, line1, line2, text)
  local buf = api.nvim_get_current_buf()
  local client = client_or_warn(buf)
  if not client or not lsp.offers(client, "tandem." .. task) then
    return
  end
  runs = runs + 1
  local id = ("nvim-%d-%d"):format(vim.fn.getpid(), runs)
  local argument = {
    uri = vim.uri_from_bufnr(buf),
    range = line_range(buf, line1, line2, client.offset_encoding),
    id = id,
  }
  if text ~= "" then
    argument[task == "debug" and "errorText" or "instruction"] = text
  end
  if task == "debug" then
    argument.diagnostics = diagnostics(buf, line1, line2)
  end
  local out = scratch(task)
  cancel_runs(out, true) -- the newer question replaces the one still answering in this window
  local title = ("# %s %s:%d-%d"):format(task, vim.fn.fnamemodify(api.nvim_buf_get_name(buf), ":~:."), line1, line2)
  set_lines(out, { title, "", "" })
  local command = { command = "tandem." .. task, arguments = { argument } }
  local request_id = lsp.execute(client, command, buf, function(err, result)
    local run = running[id]
    if run == nil then
      return
    end
    running[id] = nil
    local head = { title, "" }
    if run.notice then
      head = vim.list_extend(head, { "> " .. run.notice, "" })
    end
    if err then
      set_lines(out, vim.list_extend(head, { "**Failed:** " .. tostring(err.message) }))
    elseif type(result) == "table" then
      local text = type(result.text) == "string" and result.text or ""
      local lines = vim.list_extend(head, vim.split(text, "\n", { plain = true }))
      set_lines(out, vim.list_extend(lines, footer(result, run.notice)))
    end
  end)
  if request_id then
    running[id] = { buf = out, client_id = client.id, request_id = request_id }
  end
end

--- `value` as an indented Markdown list, keys sorted.
local function outline(value, indent, lines)
  local keys = vim.tbl_keys(value)
  table.sort(keys, function(a, b)
    return tostring(a) < tostring(b)
  end)
  for _, key in ipairs(keys) do
    local item = value[key]
    if type(item) == "table" and next(item) ~= nil then
      table.insert(lines, ("%s- %s:"):format(indent, key))
      outline(item, indent .. "  ", lines)
    else
      local text = item == vim.NIL and "null" or type(item) == "table" and "none" or tostring(item)
      table.insert(lines, ("%s- %s: %s"):format(indent, key, text))
    end
  end
  return lines
end

local PERIODS = { { "today", "Today" }, { "thisMonth", "This month" }, { "allTime", "All time" } }

--- The usage report as Markdown tables, one per period, then acceptance.
local function usage_lines(report)
  local lines = { "# tandem usage" }
  for _, period in ipairs(PERIODS) do
    local data = report.periods[period[1]]
    vim.list_extend(lines, { "", "## " .. period[2], "" })
    if #data.rows == 0 then
      table.insert(lines, "no requests")
    else
      vim.list_extend(lines, {
        "| backend | model | task | requests | prompt tokens | output tokens | cost |",
        "|---|---|---|--:|--:|--:|--:|",
      })
      for _, row in ipairs(data.rows) do
        table.insert(
          lines,
          ("| %s | %s | %s | %d | %d | %d | $%.4f |"):format(
            row.backend,
            row.model,
            row.kind,
            row.requests,
            row.promptTokens,
            row.completionTokens,
            row.costUsd
          )
        )
      end
    end
  end
  if type(report.acceptance) == "table" and #report.acceptance > 0 then
    vim.list_extend(lines, { "", "## Accepted completions", "" })
    for _, row in ipairs(report.acceptance) do
      local language = (row.language or "") ~= "" and (" (%s)"):format(row.language) or ""
      local line = ("- %s%s: %d of %d shown"):format(row.model, language, row.accepted, row.shown)
      if (row.acceptedChars or 0) > 0 then
        line = line
          .. ("; %d characters accepted, %d still there after 30 s, %d after 5 min"):format(
            row.acceptedChars,
            row.retainedChars30s,
            row.retainedChars5m
          )
      end
      table.insert(lines, line)
    end
  end
  return lines
end

--- Run `tandem.status` or `tandem.usage` and show the answer in its scratch split.
function M.report(name)
  local buf = api.nvim_get_current_buf()
  local client = client_or_warn(buf)
  if not client then
    return
  end
  lsp.execute(client, { command = "tandem." .. name }, buf, function(err, result)
    local out = scratch(name)
    if err then
      set_lines(out, { "# tandem " .. name, "", "**Failed:** " .. tostring(err.message) })
    elseif name == "usage" then
      set_lines(out, usage_lines(result))
    else
      set_lines(out, outline(result, "", { "# tandem status", "" }))
    end
  end)
end

return M
