-- mailwarden.lua: Dovecot passdb/userdb that asks mailwarden over HTTP.
--
-- One script for Dovecot 2.3 (Debian 12) and 2.4 (Debian 13), unchanged.
-- Needs the packages dovecot-auth-lua and lua-cjson; lua-socket is
-- recommended (below). Install it as /etc/dovecot/mailwarden.lua
-- (root:dovecot 0640: it holds the secret) and include
-- 2.3/auth-mailwarden.conf.ext (or the 2.4 equivalent).
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
-- Transport. With LuaSocket installed (Debian package lua-socket) the script
-- speaks HTTP/1.1 itself over one kept connection per Lua state (the passdb
-- and the userdb each have one per auth-worker): a blocking socket, which is
-- what auth-workers expect. Dovecot's own HTTP client (dovecot.http, a new
-- ioloop per request and lib-http) costs Dovecot more CPU per request than a
-- whole sql lookup; LuaSocket cuts Dovecot's CPU per lookup by about 40 %,
-- and repeated userdb lookups run as fast as Dovecot's own userdb sql
-- (bench/README.md). Without LuaSocket, or with TRANSPORT = "dovecot.http",
-- the script uses dovecot.http (http:// URLs only).
-- The connection is reopened when mailwarden has closed it (it closes
-- connections idle for 60 s, and on restart): a request on a kept connection
-- that got no answer byte at all is sent once more on a new one.
--
-- Version detection (needed because the HTTP client options and the request
-- field names differ; the script never reads Dovecot's version string):
--   * a dovecot.http client is first created with the 2.3 option names
--     (request_absolute_timeout_msecs = 5000); 2.4 rejects them ("... is
--     unknown setting"), so the script retries with the 2.4 names
--     (request_absolute_timeout = "5000ms") and from then on reports "2.4".
--     2.3 silently ignores unknown names, which is why the 2.3 spelling
--     must be tried first. (With LuaSocket that client is only created for
--     this test and never sends anything.)
--   * request fields are read under the detected version's names: 2.4
--     req.protocol / req.remote_ip, 2.3 req.service / req.rip.
-- The detected version is sent to mailwarden ("version") and logged once per
-- Lua state, with the transport.

---------------------------------------------------------------- settings
local URL = "http://127.0.0.1:10052"   -- mailwarden's auth endpoint: http://127.0.0.1:PORT or unix:/path (no trailing /)
local SECRET = ""                      -- shared secret, sent as X-Mailwarden-Secret
local SECRET_FILE = ""                 -- or: read the secret from this file
local TIMEOUT_MS = 5000                -- whole request, connect included
local TRANSPORT = "auto"               -- "auto" (LuaSocket if installed), "luasocket" or "dovecot.http"
-------------------------------------------------------------------------

local json = require("cjson")
local auth = dovecot.auth

-- Per Lua state: set up on first use by setup().
local ready, version, v24, secret, secret_header, transport
local client               -- dovecot.http client (transport "dovecot.http")
local socket, endpoint     -- LuaSocket and the parsed URL (transport "luasocket")
local conn                 -- the kept LuaSocket connection, or nil

local function log(level, msg)
  local f = dovecot["i_" .. level]
  if f then f("mailwarden.lua: " .. msg) end
end

-- Creates a dovecot.http client; the first one also detects the API version.
local function http_client()
  -- Both timeouts: the absolute one fails the request, the per-attempt one
  -- also closes the connection. With only the former, the connection (shared
  -- by all clients of the process) keeps waiting for the late answer and
  -- every later request queues behind it.
  local ok, c = pcall(dovecot.http.client, {
    request_absolute_timeout_msecs = TIMEOUT_MS, -- 2.3 spelling
    request_timeout_msecs = TIMEOUT_MS,
  })
  if ok then return c, "2.3" end
  if not tostring(c):find("unknown setting", 1, true) then error(c, 0) end
  return dovecot.http.client({ -- 2.4 spelling
    request_absolute_timeout = TIMEOUT_MS .. "ms",
    request_timeout = TIMEOUT_MS .. "ms",
  }), "2.4"
end

-- "unix:/path" or "http://host[:port][/base]" -> endpoint table.
local function parse_url(url)
  local path = url:match("^unix:(/.+)$")
  if path then return { unix = path, host = "localhost", base = "" } end
  local hostport, base = url:match("^http://([^/]+)(.*)$")
  if not hostport then error("URL must be http://HOST:PORT or unix:/PATH, not " .. url, 0) end
  local host, port = hostport:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = hostport:match("^([^:]+):?(%d*)$") end
  if not host then error("bad host in URL " .. url, 0) end
  return { host = host, port = tonumber(port) or 80, hostport = hostport, base = base, v6 = host:find(":", 1, true) ~= nil }
end

-- Once per Lua state: secret, version, transport. Errors propagate (the
-- callers turn them into temporary failures) and setup runs again next time.
local function setup()
  if ready then return end
  local s = SECRET
  if SECRET_FILE ~= "" then
    local f = assert(io.open(SECRET_FILE, "r"))
    s = f:read("*l") or ""
    f:close()
  end
  if s:find("[%c]") then error("the secret must not contain control characters", 0) end
  local c, v = http_client()
  local t = TRANSPORT
  if t ~= "auto" and t ~= "luasocket" and t ~= "dovecot.http" then error("unknown TRANSPORT " .. tostring(t), 0) end
  local ep, sock, note
  if t ~= "dovecot.http" then
    -- socket.core, not socket: the same functions without socket.lua's
    -- helpers. Dovecot runs a full garbage collection after every lookup,
    -- whose cost grows with everything loaded.
    local ok, mod = pcall(require, "socket.core")
    if ok then
      ep = parse_url(URL)
      if ep.unix then
        local uok, unix = pcall(require, "socket.unix")
        if not uok then error("LuaSocket without socket.unix: " .. tostring(unix), 0) end
        ep.new = unix.stream or unix
      else
        ep.new = ep.v6 and mod.tcp6 or mod.tcp
      end
      sock, t = mod, "luasocket"
      note = mod._VERSION or "LuaSocket"
    elseif t == "luasocket" then
      error("TRANSPORT = \"luasocket\" but LuaSocket is missing (package lua-socket): " .. tostring(mod), 0)
    else
      t, note = "dovecot.http", "dovecot.http (LuaSocket not installed: package lua-socket)"
    end
  else
    note = "dovecot.http"
  end
  if t == "dovecot.http" and URL:find("^unix:") then
    error("a unix: URL needs LuaSocket (package lua-socket); dovecot.http speaks only http://", 0)
  end
  secret, version, v24, transport, socket, endpoint = s, v, v == "2.4", t, sock, ep
  client = t == "dovecot.http" and c or nil
  secret_header = s ~= "" and "X-Mailwarden-Secret: " .. s .. "\r\n" or ""
  ready = true
  log("info", "using the Dovecot " .. version .. " API and " .. note .. ", endpoint " .. URL)
end

-- Percent-encoding of everything but unreserved characters (RFC 3986), byte
-- by byte, so UTF-8 and any other bytes survive.
local function enc(s)
  return (string.gsub(s, "[^A-Za-z0-9%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

---------------------------------------------------------------- LuaSocket

local function close_conn()
  if conn then conn:close() end
  conn = nil
end

-- Each blocking call may use what is left of the request's time.
local function arm(s, deadline)
  local left = deadline - socket.gettime()
  if left <= 0 then return nil, "timeout" end
  s:settimeout(left)
  return true
end

local function open(deadline)
  local s, err = endpoint.new()
  if not s then return nil, err end
  local ok
  ok, err = arm(s, deadline)
  if ok then
    if endpoint.unix then
      ok, err = s:connect(endpoint.unix)
    else
      ok, err = s:connect(endpoint.host, endpoint.port)
    end
  end
  if not ok then
    s:close()
    return nil, "connect to " .. URL .. ": " .. tostring(err)
  end
  if not endpoint.unix then s:setoption("tcp-nodelay", true) end
  return s
end

-- The body after the head: Content-Length (what mailwarden sends), chunked,
-- or up to the close.
local function read_body(s, deadline, length, chunked)
  if length then
    if length == 0 then return "" end
    local ok, err = arm(s, deadline)
    if not ok then return nil, err end
    return s:receive(length)
  end
  if not chunked then
    local ok, err = arm(s, deadline)
    if not ok then return nil, err end
    return s:receive("*a")
  end
  local parts = {}
  while true do
    local ok, err = arm(s, deadline)
    if not ok then return nil, err end
    local line
    line, err = s:receive("*l")
    if not line then return nil, err end
    local size = tonumber(line:match("^%x+"), 16)
    if not size then return nil, "bad chunk size" end
    if size == 0 then
      repeat -- trailer fields up to the empty line
        line, err = s:receive("*l")
        if not line then return nil, err end
      until line == ""
      return table.concat(parts)
    end
    local data
    data, err = s:receive(size)
    if not data then return nil, err end
    parts[#parts + 1] = data
    line, err = s:receive("*l")
    if line ~= "" then return nil, err or "bad chunk end" end
  end
end

-- One request on connection s. Returns status, reason, body, keep (the
-- connection may be reused); or nil, error text, answered (whether any byte
-- of a reply came back: if not, nothing was processed and a resend is safe).
local function exchange(s, request, deadline)
  local ok, err = arm(s, deadline)
  if not ok then return nil, err, false end
  ok, err = s:send(request)
  if not ok then return nil, err, false end
  ok, err = arm(s, deadline)
  if not ok then return nil, err, false end
  local line, partial
  line, err, partial = s:receive("*l")
  if not line then return nil, err, partial ~= nil and partial ~= "" end
  local minor, status, reason = line:match("^HTTP/1%.([01]) (%d%d%d) ?(.*)$")
  if not status then return nil, "not an HTTP answer", true end
  local length, chunked, keep = nil, false, minor == "1"
  while true do
    line, err = s:receive("*l")
    if not line then return nil, err, true end
    if line == "" then break end
    -- Only three fields matter; the others (Date, Content-Type) are skipped
    -- by their first letter.
    local c = line:byte(1)
    if c == 67 or c == 99 or c == 84 or c == 116 then -- C, c, T, t
      line = line:lower()
      local value = line:match("^content%-length:%s*(%d+)")
      if value then
        length = tonumber(value)
      elseif line:find("^transfer%-encoding:") then
        chunked = line:find("chunked", 19, true) ~= nil
      elseif line:find("^connection:") then
        if line:find("close", 12, true) then keep = false elseif line:find("keep-alive", 12, true) then keep = true end
      end
    end
  end
  if chunked then length = nil end
  local body
  body, err = read_body(s, deadline, length, chunked)
  if not body then return nil, err, true end
  return tonumber(status), reason, body, keep and (length ~= nil or chunked)
end

-- A GET over LuaSocket: status, reason, body; or 0, error text, nil.
-- `once`: a connection of its own, closed afterwards (the user list, so the
-- kept connection stays on mailwarden's fast path for lookups).
local function socket_get(target, headers, once)
  local deadline = socket.gettime() + TIMEOUT_MS / 1000
  local request = "GET " .. endpoint.base .. target .. " HTTP/1.1\r\nHost: " .. (endpoint.hostport or endpoint.host)
    .. "\r\n" .. headers .. (once and "Connection: close\r\n\r\n" or "\r\n")
  for attempt = 1, 2 do
    local s, reused = not once and conn, true
    if not s then
      local err
      s, err = open(deadline)
      if not s then return 0, err end
      reused = false
      if not once then conn = s end
    end
    local status, reason, body, keep = exchange(s, request, deadline)
    if status then
      if once or not keep then s:close(); if not once then conn = nil end end
      return status, reason, body
    end
    if once then s:close() else close_conn() end
    -- reason is the error text, body whether an answer had started.
    if not reused or body or reason == "timeout" or attempt == 2 then
      return 0, tostring(reason) .. " (" .. URL .. ")"
    end
    -- mailwarden closed the idle connection (or restarted): send it again on a new one.
  end
end

----------------------------------------------------------------- requests

-- One GET of `path` with the request's user and context (none for the user
-- list) and the detected version in the query string. Returns the status
-- and the decoded JSON object (only for 200 and a genuine "unknown user"
-- 404), or the status and an error text. Status 0: no answer over LuaSocket
-- (connect failed, timeout, closed) or no setup; statuses >= 9000 are
-- dovecot.http's client errors.
local function call(path, req, passdb, password, once)
  if not ready then
    local ok, err = pcall(setup)
    if not ok then return 0, nil, tostring(err) end
  end
  local q = {}
  if req then
    -- Each field read builds Dovecot's variable table: read only this
    -- version's names (2.4 req.protocol / req.remote_ip, 2.3 req.service /
    -- req.rip). mailwarden logs the service and remote IP and records the
    -- latter as the last login's address.
    local user, service, ip = req.user, nil, nil
    if v24 then service = req.protocol else service = req.service end
    if passdb then
      if v24 then ip = req.remote_ip else ip = req.rip end
    end
    if user ~= nil then q[#q + 1] = "user=" .. enc(user) end
    if service ~= nil then q[#q + 1] = "service=" .. enc(service) end
    if ip ~= nil and ip ~= "" then q[#q + 1] = "remote_ip=" .. enc(ip) end
  end
  q[#q + 1] = "version=" .. version
  local target = path .. "?" .. table.concat(q, "&")
  local status, reason, payload
  if transport == "luasocket" then
    local h = secret_header
    if password then h = h .. "X-Mailwarden-Password: " .. enc(password) .. "\r\n" end
    local done
    done, status, reason, payload = pcall(socket_get, target, h, once)
    if not done then
      -- A Lua error half-way leaves the kept connection in an unknown state.
      close_conn()
      return 0, nil, tostring(status)
    end
  else
    local r = client:request({ url = URL .. target, method = "GET" })
    if secret ~= "" then r:add_header("X-Mailwarden-Secret", secret) end
    if password then r:add_header("X-Mailwarden-Password", enc(password)) end
    local resp = r:submit()
    status, reason = resp:status(), resp:reason()
    if status == 200 or status == 404 then payload = resp:payload() end
  end
  if status ~= 200 and status ~= 404 then return status, nil, reason end
  local decoded_ok, data = pcall(json.decode, payload)
  if not decoded_ok or type(data) ~= "table" or (status == 404 and data.result ~= "unknown") then
    return status, nil, "unexpected answer from " .. URL .. path
  end
  return status, data
end

-- "HTTP 500 Internal Server Error", or the transport's error without a status.
local function failure(what, status, err)
  if status == 0 then return string.format("mailwarden %s: %s", what, err or "") end
  return string.format("mailwarden %s: HTTP %d %s", what, status, err or "")
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

local function passdb_result(status, data, err, verifying)
  if status == 200 and data then return auth.PASSDB_RESULT_OK, fields(data, verifying) end
  if unknown(status, data) then return auth.PASSDB_RESULT_USER_UNKNOWN, "" end
  if status == 403 then return auth.PASSDB_RESULT_PASSWORD_MISMATCH, "" end
  -- Dovecot logs this message as an error.
  return auth.PASSDB_RESULT_INTERNAL_FAILURE, failure("passdb", status, err)
end

function auth_password_verify(req, password)
  local status, data, err = call("/dovecot/passdb", req, true, password)
  return passdb_result(status, data, err, true)
end

function auth_passdb_lookup(req)
  local status, data, err = call("/dovecot/passdb", req, true, nil)
  return passdb_result(status, data, err, false)
end

function auth_userdb_lookup(req)
  local status, data, err = call("/dovecot/userdb", req, false, nil)
  if status == 200 and data then return auth.USERDB_RESULT_OK, fields(data, true) end
  if unknown(status, data) then return auth.USERDB_RESULT_USER_UNKNOWN, "" end
  return auth.USERDB_RESULT_INTERNAL_FAILURE, failure("userdb", status, err)
end

-- Raising an error makes the iteration fail (doveadm reports it).
function auth_userdb_iterate()
  local status, data, err = call("/dovecot/users", nil, false, nil, true)
  if status ~= 200 or not data or type(data.users) ~= "table" then
    error(failure("user list", status, err), 0)
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
  if conn then conn:close() end
  conn = nil
end
