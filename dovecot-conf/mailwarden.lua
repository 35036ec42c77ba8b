-- mailwarden.lua: Dovecot passdb/userdb that asks mailwarden over HTTP.
--
-- One script for Dovecot 2.3 (Debian 12) and 2.4 (Debian 13), unchanged.
-- Needs the packages dovecot-auth-lua and lua-cjson. Install it as
-- /etc/dovecot/mailwarden.lua (root:dovecot 0640: it holds the secret) and
-- include 2.3/auth-mailwarden.conf.ext (or the 2.4 equivalent).
--
--   auth_password_verify(req, password)  logins (IMAP, POP3, SMTP AUTH via
--                                         Postfix): mailwarden checks the
--                                         plaintext, so it can rehash legacy
--                                         hashes on login
--   auth_passdb_lookup(req)              lookups without a password
--   auth_userdb_lookup(req)              home/uid/gid/quota (LMTP, doveadm)
--   auth_userdb_iterate()                user list (doveadm -A, user '*')
--
-- Every call is a GET with the user and context in the query string (the
-- password, for auth_password_verify, percent-encoded in the
-- X-Mailwarden-Password header, never in the URL): a request with a body
-- costs Dovecot's HTTP client an "Expect: 100-continue" round trip.
--
-- HTTP status -> Dovecot result: 200 OK (fields from the JSON body),
-- 404 with {"result":"unknown"} USER_UNKNOWN, 403 PASSWORD_MISMATCH; anything
-- else (401 wrong secret, a 404 without that body, i.e. a wrong URL, 5xx), a
-- timeout or a refused connection INTERNAL_FAILURE: a temporary failure, so
-- a misconfiguration never makes LMTP bounce mail as "unknown user".
--
-- Version detection (needed because the HTTP client options and the request
-- field names differ; the script never reads Dovecot's version string):
--   * the HTTP client is first created with the 2.3 option names
--     (request_absolute_timeout_msecs = 5000); 2.4 rejects them ("... is
--     unknown setting"), so the script retries with the 2.4 names
--     (request_absolute_timeout = "5000ms") and from then on reports "2.4".
--     2.3 silently ignores unknown names, which is why the 2.3 spelling
--     must be tried first;
--   * request fields are read under both names: 2.4 req.protocol /
--     req.remote_ip, 2.3 req.service / req.rip.
-- The detected version is sent to mailwarden ("version") and logged once per
-- Lua state (the passdb and the userdb each have one per auth-worker).
--
-- The HTTP client is created once per Lua state and kept: its connection to
-- mailwarden stays open between requests (Dovecot's client has no idle
-- timeout unless max_idle_time_msecs is set; mailwarden closes connections
-- idle for 60 s and the client reconnects on the next request).

---------------------------------------------------------------- settings
local URL = "http://127.0.0.1:10052"   -- mailwarden's auth endpoint (no trailing /)
local SECRET = ""                      -- shared secret, sent as X-Mailwarden-Secret
local SECRET_FILE = ""                 -- or: read the secret from this file
local TIMEOUT_MS = 5000                -- whole request, connect included
-------------------------------------------------------------------------

local json = require("cjson")
local auth = dovecot.auth

local client, version, secret

local function log(level, msg)
  local f = dovecot["i_" .. level]
  if f then f("mailwarden.lua: " .. msg) end
end

-- Creates the HTTP client on first use and detects the API version.
local function http()
  if client then return client end
  -- Both timeouts: the absolute one fails the request, the per-attempt one
  -- also closes the connection. With only the former, the connection (shared
  -- by all clients of the process) keeps waiting for the late answer and
  -- every later request queues behind it.
  local ok, c = pcall(dovecot.http.client, {
    request_absolute_timeout_msecs = TIMEOUT_MS, -- 2.3 spelling
    request_timeout_msecs = TIMEOUT_MS,
  })
  if ok then
    version = "2.3"
  elseif tostring(c):find("unknown setting", 1, true) then
    c = dovecot.http.client({ -- 2.4 spelling
      request_absolute_timeout = TIMEOUT_MS .. "ms",
      request_timeout = TIMEOUT_MS .. "ms",
    })
    version = "2.4"
  else
    error(c, 0)
  end
  secret = SECRET
  if SECRET_FILE ~= "" then
    local f = assert(io.open(SECRET_FILE, "r"))
    secret = f:read("*l") or ""
    f:close()
  end
  log("info", "using the Dovecot " .. version .. " API, endpoint " .. URL)
  client = c
  return client
end

-- Percent-encoding of everything but unreserved characters (RFC 3986), byte
-- by byte, so UTF-8 and any other bytes survive.
local function enc(s)
  return (string.gsub(s, "[^A-Za-z0-9%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

-- One GET; `params` is a list of {name, value} pairs (nil values left out),
-- the detected version is appended. Returns the status and the decoded JSON
-- object (only for 200 and a genuine "unknown user" 404), or the status and
-- an error text. Statuses >= 9000 are Dovecot's own client errors (connect
-- failed, timeout).
local function call(path, params, password)
  local ok, c = pcall(http)
  if not ok then return 0, nil, tostring(c) end
  local q = {}
  for _, p in ipairs(params) do
    if p[2] ~= nil then q[#q + 1] = p[1] .. "=" .. enc(p[2]) end
  end
  q[#q + 1] = "version=" .. version
  local r = c:request({ url = URL .. path .. "?" .. table.concat(q, "&"), method = "GET" })
  if secret ~= "" then r:add_header("X-Mailwarden-Secret", secret) end
  if password then r:add_header("X-Mailwarden-Password", enc(password)) end
  local resp = r:submit()
  local status = resp:status()
  if status ~= 200 and status ~= 404 then return status, nil, resp:reason() end
  local decoded_ok, data = pcall(json.decode, resp:payload())
  if not decoded_ok or type(data) ~= "table" or (status == 404 and data.result ~= "unknown") then
    return status, nil, "unexpected answer from " .. URL .. path
  end
  return status, data
end

-- 404 counts as "unknown user" only with mailwarden's {"result":"unknown"}.
local function unknown(status, data)
  return status == 404 and data ~= nil
end

-- JSON fields -> Dovecot fields. Booleans are "true if present" in Dovecot,
-- so false and null are dropped (never sent as "no"); numbers become integers.
local function fields(data, drop_password)
  local out = {}
  for k, v in pairs(type(data.fields) == "table" and data.fields or {}) do
    local t = type(v)
    if t == "string" then
      out[k] = v
    elseif t == "number" then
      local i = math.tointeger and math.tointeger(v)
      out[k] = i and string.format("%d", i) or tostring(v)
    elseif v == true then
      out[k] = "yes"
    end -- false, cjson.null, nested tables: dropped
  end
  if type(data.user) == "string" and data.user ~= "" then out.user = data.user end
  if drop_password then out.password = nil end
  return out
end

local function nonempty(v)
  if v ~= nil and v ~= "" then return v end
end

-- 2.4 names first, then 2.3's. mailwarden logs the service and remote IP and
-- records the latter as the last login's address.
local function passdb_params(req)
  return {
    { "user", req.user },
    { "service", req.protocol or req.service },
    { "remote_ip", nonempty(req.remote_ip or req.rip) },
  }
end

local function passdb_result(status, data, err, verifying)
  if status == 200 and data then return auth.PASSDB_RESULT_OK, fields(data, verifying) end
  if unknown(status, data) then return auth.PASSDB_RESULT_USER_UNKNOWN, "" end
  if status == 403 then return auth.PASSDB_RESULT_PASSWORD_MISMATCH, "" end
  -- Dovecot logs this message as an error.
  return auth.PASSDB_RESULT_INTERNAL_FAILURE, string.format("mailwarden passdb: HTTP %d %s", status, err or "")
end

function auth_password_verify(req, password)
  local status, data, err = call("/dovecot/passdb", passdb_params(req), password)
  return passdb_result(status, data, err, true)
end

function auth_passdb_lookup(req)
  local status, data, err = call("/dovecot/passdb", passdb_params(req), nil)
  return passdb_result(status, data, err, false)
end

function auth_userdb_lookup(req)
  local status, data, err = call("/dovecot/userdb", {
    { "user", req.user },
    { "service", req.protocol or req.service },
  }, nil)
  if status == 200 and data then return auth.USERDB_RESULT_OK, fields(data, true) end
  if unknown(status, data) then return auth.USERDB_RESULT_USER_UNKNOWN, "" end
  return auth.USERDB_RESULT_INTERNAL_FAILURE, string.format("mailwarden userdb: HTTP %d %s", status, err or "")
end

-- Raising an error makes the iteration fail (doveadm reports it).
function auth_userdb_iterate()
  local ok, c = pcall(http)
  if not ok then error("mailwarden: " .. tostring(c), 0) end
  local status, data, err = call("/dovecot/users", {}, nil)
  if status ~= 200 or not data or type(data.users) ~= "table" then
    error(string.format("mailwarden user list: HTTP %d %s", status, err or ""), 0)
  end
  local users = {}
  for _, u in ipairs(data.users) do
    if type(u) == "string" then users[#users + 1] = u end
  end
  return users
end

function script_init()
  return 0
end

function script_deinit()
end
