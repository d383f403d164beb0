--- `:checkhealth tandem`: the server command, the running server, its model, GPU offload, the cloud key.
local config = require("tandem.config")
local lsp = require("tandem.lsp")

local M = {}

local health = vim.health

local function status_of(client)
  local buf = next(client.attached_buffers)
  local params = { command = "tandem.status" }
  local reply, err = lsp.call(client, "request_sync", "workspace/executeCommand", params, 5000, buf)
  if not reply then
    return nil, err
  end
  if reply.err then
    return nil, reply.err.message
  end
  return reply.result
end

local function report_model(model)
  if model.state == "ready" then
    health.ok(("model %s ready (%s, context %s tokens)"):format(model.name, model.path, model.contextSize))
    if model.gpuOffload then
      health.ok("GPU offload on")
    else
      health.info("GPU offload off: the model runs on the CPU (see local.nGpuLayers, and a CUDA build of llama.cpp)")
    end
  elseif model.state == "error" then
    health.error("the model failed to load: " .. tostring(model.error), { "set local.modelPath to a GGUF file" })
  else
    health.info("model " .. tostring(model.state))
  end
end

local function report_cloud(cloud, env)
  local key = env.OPENAI_API_KEY or vim.env.OPENAI_API_KEY
  if key and key ~= "" then
    health.ok("OPENAI_API_KEY is set")
  else
    health.info("OPENAI_API_KEY is not set: explain / debug / refactor use only the local model")
  end
  if type(cloud) ~= "table" then
    return
  end
  if not cloud.configured then
    health.info("no cloud model configured")
  elseif cloud.healthy or cloud.lastError == nil or cloud.lastError == vim.NIL then
    health.ok("cloud model " .. tostring(cloud.model) .. " configured")
  else
    health.warn("cloud model " .. tostring(cloud.model) .. " failing: " .. tostring(cloud.lastError))
  end
end

--- Run the checks.
function M.check()
  health.start("tandem")
  if vim.fn.has("nvim-0.10") ~= 1 then
    health.error("Neovim 0.10 or newer is needed")
    return
  end
  local opts = config.options
  local exe = vim.fn.exepath(opts.cmd[1])
  if exe ~= "" then
    health.ok(("server command: %s (%s)"):format(table.concat(opts.cmd, " "), exe))
  else
    health.error(("server command %q not found"):format(opts.cmd[1]), {
      "install tandem (`make demo` in a checkout creates .venv/bin/tandem) and put that bin/ on PATH",
      'or pass the full path: require("tandem").setup({ cmd = { "/path/to/.venv/bin/tandem", "serve" } })',
    })
  end
  local client = lsp.client()
  local status, err = nil, nil
  if not client then
    health.warn("server not running: open a file (:LspLog shows why a start failed)")
  else
    health.ok(("server running (client %d, %s positions)"):format(client.id, client.offset_encoding))
    status, err = status_of(client)
    if not status then
      health.error("tandem.status failed: " .. tostring(err))
    else
      report_model(status.model)
    end
  end
  report_cloud(status and status.backends and status.backends.cloud, opts.cmd_env or {})
  local ghost = require("tandem.ghost")
  health.info("inline completions " .. (ghost.enabled and "on" or "paused (:TandemToggle)"))
end

return M
