-- wrk script: POST one random customer id (full service) or one fixed feature row (bare service).
-- BODY_MODE=ids (default) | row ; N_CUSTOMERS = id range ; ROW = the JSON body for row mode;
-- API_KEY = the service's serving.api_key (sent as x-api-key when set).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if os.getenv("API_KEY") then
  wrk.headers["x-api-key"] = os.getenv("API_KEY")
end
local mode = os.getenv("BODY_MODE") or "ids"
local n = tonumber(os.getenv("N_CUSTOMERS") or "10000")
local row = os.getenv("ROW") or ""

request = function()
  if mode == "row" then
    return wrk.format(nil, nil, nil, row)
  end
  return wrk.format(nil, nil, nil, '{"customer_ids":[' .. math.random(1, n) .. ']}')
end
