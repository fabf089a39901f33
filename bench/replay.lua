-- Replays pre-signed webhook requests, one per line: path, webhook-id, timestamp, signature, body (tab-separated).
local requests = {}
local next_index = 0

function init(args)
  for line in io.lines(args[1]) do
    local path, id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", path, {
      ["content-type"] = "application/json",
      ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
    }, body)
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
