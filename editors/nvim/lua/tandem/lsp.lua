--- The tandem client: starting the server, attaching buffers, sending requests.
local config = require("tandem.config")

local M = {}

M.name = "tandem"

local method_syntax = vim.fn.has("nvim-0.11") == 1
local warned_missing = false

--- Call a client method with the syntax the running Neovim expects (0.11 `client:m()`, 0.10 `client.m()`).
function M.call(client, method, ...)
  if method_syntax then
    return client[method](client, ...)
  end
  return client[method](...)
end

--- The running tandem client attached to `buf` (or any running one when `buf` is nil).
function M.client(buf)
  return vim.lsp.get_clients({ bufnr = buf, name = M.name })[1]
end

--- Whether tandem should attach to `buf`: a file buffer of a chosen filetype.
local function wanted(buf)
  if vim.bo[buf].buftype ~= "" or vim.api.nvim_buf_get_name(buf) == "" then
    return false
  end
  local filetypes = config.options.filetypes
  return filetypes == nil or vim.tbl_contains(filetypes, vim.bo[buf].filetype)
end

--- Start the server (once per Neovim) and attach `buf` to it.
function M.attach(buf, handlers)
  if not wanted(buf) then
    return
  end
  local opts = config.options
  if vim.fn.executable(opts.cmd[1]) ~= 1 then
    if not warned_missing then
      warned_missing = true
      vim.notify(
        ("tandem: server command %q not found; install tandem or set `cmd` (see :checkhealth tandem)"):format(
          opts.cmd[1]
        ),
        vim.log.levels.ERROR
      )
    end
    return
  end
  -- An empty Lua table would be sent as a JSON list.
  local settings = next(opts.settings) == nil and vim.empty_dict() or opts.settings
  return vim.lsp.start({
    name = M.name,
    cmd = opts.cmd,
    cmd_env = opts.cmd_env,
    root_dir = vim.fs.root(buf, { ".git" }) or vim.fn.getcwd(),
    init_options = settings,
    settings = { tandem = settings },
    handlers = handlers,
  }, {
    bufnr = buf,
    -- One server per Neovim: each would load its own copy of the model.
    reuse_client = function(client, conf)
      return client.name == conf.name
    end,
  })
end

--- Whether the server offers the command `name`; warns when it does not.
function M.offers(client, name)
  local provider = client.server_capabilities.executeCommandProvider
  if vim.tbl_contains(type(provider) == "table" and provider.commands or {}, name) then
    return true
  end
  vim.notify(("tandem: this server has no command %s; update tandem"):format(name), vim.log.levels.WARN)
  return false
end

--- Send `workspace/executeCommand` for `command` ({command, arguments}); returns the request id.
function M.execute(client, command, buf, handler)
  if not M.offers(client, command.command) then
    return nil
  end
  local params = { command = command.command, arguments = command.arguments }
  local ok, id = M.call(client, "request", "workspace/executeCommand", params, handler or function() end, buf)
  return ok and id or nil
end

return M
