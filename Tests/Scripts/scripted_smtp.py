#!/usr/bin/python3
"""Scriptable SMTP destination for integration tests (aiosmtpd 1.4.x).

Usage:
  scripted_smtp.py --listen HOST:PORT [--script script.json] --record record.jsonl
                   [--tls-cert cert.pem [--tls-key key.pem]] [--require-tls]
                   [--hostname NAME] [--verbose]

Prints "READY <port>" (flushed) on stdout once listening (PORT 0 picks a free
port).  SIGTERM/SIGINT: close all connections, exit 0.  SIGHUP: re-read the
script (on error the old script stays in force and a "reload" event with
"ok": false is recorded); rule "times" counters restart after a reload.

Script (JSON object; unknown fields are an error, exit 2):
  {
    "size": 33554432,        # optional, SIZE advertised/enforced; 0 = no limit ("SIZE")
    "smtputf8": true,        # optional, advertise/accept SMTPUTF8
    "require_tls": false,    # optional, same as --require-tls
    "comment": "...",        # optional, ignored
    "rules": [               # evaluated in order, first match wins, default accept
      {"when": "connect|ehlo|mail|rcpt|data|data_end",
       "address": "x@y",     # rcpt: the recipient; data/data_end: any recipient (case-insensitive)
       "domain": "y",        # same, recipient domain (case-insensitive)
       "sender": "a@b",      # MAIL FROM (case-insensitive; "" or "<>" = null sender); mail/rcpt/data/data_end
       "times": N,           # only the first N matching events (per rule, across connections)
       "after_messages": N,  # only once N messages have been accepted in total
       "reply": "451 4.3.0 try again later",   # "\\n" separates lines of a multi-line reply
       "action": "disconnect|disconnect_mid_data|refuse|delay|accept",
       "seconds": 1.5,       # for action "delay"
       "comment": "..."}
    ]
  }

Matching: "address"/"domain" compare with the RCPT address (rcpt) or with any
recipient accepted in the transaction (data, data_end).  A matching rule with
"times" is used up after N matches; "after_messages" compares with the total
number of messages accepted since start.  Actions:
  disconnect           close the socket at that point without replying
  disconnect_mid_data  (data_end only) the whole message has been read; close
                       without the final reply; the message is NOT recorded
  refuse               (connect only) reply "554 5.3.2 ..." (or "reply") and close
  delay                sleep "seconds", then reply normally (or with "reply")
  accept               normal behaviour (stops later rules from matching)
A "reply" replaces the normal reply; a 2xx reply keeps the normal effect
(greeting / EHLO ok / sender or recipient accepted / message accepted), any
other code rejects.  At "connect" a non-2xx reply is sent and the connection
closed.  Any 421 reply is followed by closing the connection (RFC 5321 3.8).
Normal replies: 250 2.1.0 (MAIL), 250 2.1.5 (RCPT), 354, 250 2.0.0 OK: queued as N.
With --require-tls / "require_tls": MAIL before STARTTLS gets
"530 5.7.0 Must issue a STARTTLS command first".

Record (--record, one JSON object per line, flushed at once; the file is
truncated at start; "time" is time.time()):
  {"event":"connect","conn":N,"time":T,"peer":"ip:port"}
  {"event":"ehlo","conn":N,"time":T,"command":"EHLO|HELO","helo":NAME,"tls":BOOL,"code":"250"}
  {"event":"tls","conn":N,"time":T,"version":"TLSv1.3","cipher":"..."}
  {"event":"message","conn":N,"time":T,"n":K,"sender":"a@b" ("" for <>),
   "recipients":[...],"tls":BOOL,"size":BYTES,"sha256":HEX,
   "message_id":"<...>"|null,"data_path":"<record>.d/K.eml","helo":NAME,
   "mail_options":[...],"rcpt_options":[...]}
  {"event":"reply","conn":N,"time":T,"stage":STAGE,"reply":TEXT,"rule":IDX,
   ...("address" for rcpt, "sender" for mail, "helo" for ehlo;
       "rule":null,"reason":"require_tls" for the 530)}
  {"event":"action","conn":N,"time":T,"stage":STAGE,"action":ACTION,"rule":IDX[,"seconds":S]}
  {"event":"close","conn":N,"time":T}
  {"event":"reload","time":T,"ok":BOOL[,"error":TEXT]}
Connections are numbered from 1.  The content file holds exactly the bytes the
client sent between DATA and the final ".", dot-unstuffed, CRLFs kept.

Exit status: 0 after SIGTERM/SIGINT, 2 for a bad command line or script,
1 if the address cannot be bound.
"""

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import signal
import ssl
import sys
import time

try:
    from aiosmtpd.smtp import SMTP, syntax
except ImportError as exc:  # pragma: no cover
    sys.stderr.write("scripted_smtp: cannot import aiosmtpd (python3-aiosmtpd): %s\n" % exc)
    sys.exit(2)

PROG = "scripted_smtp"
log = logging.getLogger(PROG)

STAGES = ("connect", "ehlo", "mail", "rcpt", "data", "data_end")
ACTIONS = ("disconnect", "disconnect_mid_data", "refuse", "delay", "accept")
TOP_FIELDS = ("rules", "size", "smtputf8", "require_tls", "comment")
RULE_FIELDS = ("when", "address", "domain", "sender", "times", "after_messages",
               "reply", "action", "seconds", "comment")
DEFAULT_SIZE = 33554432
REPLY_LINE_RE = re.compile(r"^[245][0-9][0-9]([ -][\x20-\x7e]*)?$")


class ScriptError(Exception):
    pass


# --------------------------------------------------------------------------
# Script loading / validation


class Rule:
    def __init__(self, index, d):
        self.index = index
        self.when = d["when"]
        self.address = d.get("address")
        self.domain = d.get("domain")
        self.sender = d.get("sender")
        self.times = d.get("times")
        self.after_messages = d.get("after_messages")
        self.reply = d.get("reply")
        self.action = d.get("action")
        self.seconds = d.get("seconds", 0)
        self.used = 0
        if self.address is not None:
            self.address = self.address.lower()
        if self.domain is not None:
            self.domain = self.domain.lower().rstrip(".")
        if self.sender is not None:
            self.sender = norm_sender(self.sender)


class Script:
    def __init__(self, rules=(), size=DEFAULT_SIZE, smtputf8=True, require_tls=False):
        self.rules = list(rules)
        self.size = size
        self.smtputf8 = smtputf8
        self.require_tls = require_tls


def norm_sender(s):
    s = s.strip()
    if s == "<>":
        return ""
    return s.lower()


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def reply_lines(text):
    return [ln.rstrip("\r") for ln in text.split("\n")]


def format_reply(text):
    """Turn "250 a\\n250 b" into a proper multi-line reply (without final CRLF)."""
    lines = reply_lines(text)
    out = []
    for i, ln in enumerate(lines):
        if i < len(lines) - 1:
            ln = ln[:3] + "-" + ln[4:] if len(ln) > 3 else ln[:3] + "-"
        else:
            ln = ln[:3] + " " + ln[4:] if len(ln) > 3 else ln
        out.append(ln)
    return "\r\n".join(out)


def reply_ok(text):
    return text[:1] == "2"


def validate_rule(i, r):
    where = "rules[%d]" % i
    if not isinstance(r, dict):
        raise ScriptError("%s: must be a JSON object" % where)
    for k in r:
        if k not in RULE_FIELDS:
            raise ScriptError("%s: unknown field %r (known fields: %s)"
                              % (where, k, ", ".join(RULE_FIELDS)))
    if "when" not in r:
        raise ScriptError("%s: missing required field 'when'" % where)
    when = r["when"]
    if when not in STAGES:
        raise ScriptError("%s: field 'when' must be one of %s, got %r"
                          % (where, ", ".join(STAGES), when))
    for k in ("address", "domain", "sender", "reply", "comment"):
        if k in r and not isinstance(r[k], str):
            raise ScriptError("%s: field %r must be a string" % (where, k))
    for k in ("times", "after_messages"):
        if k in r and (not _is_int(r[k]) or r[k] < 0):
            raise ScriptError("%s: field %r must be a non-negative integer" % (where, k))
    if "address" in r and when not in ("rcpt", "data", "data_end"):
        raise ScriptError("%s: field 'address' is only valid for when=rcpt|data|data_end" % where)
    if "domain" in r and when not in ("rcpt", "data", "data_end"):
        raise ScriptError("%s: field 'domain' is only valid for when=rcpt|data|data_end" % where)
    if "sender" in r and when not in ("mail", "rcpt", "data", "data_end"):
        raise ScriptError("%s: field 'sender' is only valid for when=mail|rcpt|data|data_end" % where)
    action = r.get("action")
    if action is not None and action not in ACTIONS:
        raise ScriptError("%s: field 'action' must be one of %s, got %r"
                          % (where, ", ".join(ACTIONS), action))
    if action is None and "reply" not in r:
        raise ScriptError("%s: needs a 'reply' or an 'action'" % where)
    if action == "refuse" and when != "connect":
        raise ScriptError("%s: action 'refuse' is only valid for when=connect" % where)
    if action == "disconnect_mid_data" and when != "data_end":
        raise ScriptError("%s: action 'disconnect_mid_data' is only valid for when=data_end" % where)
    if "reply" in r and action not in (None, "delay", "refuse"):
        raise ScriptError("%s: field 'reply' cannot be combined with action %r" % (where, action))
    if "seconds" in r:
        if action != "delay":
            raise ScriptError("%s: field 'seconds' is only valid with action 'delay'" % where)
        s = r["seconds"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0:
            raise ScriptError("%s: field 'seconds' must be a non-negative number" % where)
    elif action == "delay":
        raise ScriptError("%s: action 'delay' needs field 'seconds'" % where)
    if "reply" in r:
        text = r["reply"]
        lines = reply_lines(text)
        for ln in lines:
            if not REPLY_LINE_RE.match(ln):
                raise ScriptError("%s: field 'reply' line %r is not an SMTP reply "
                                  "(3-digit code 2xx/4xx/5xx, optional printable ASCII text)"
                                  % (where, ln))
        codes = {ln[:3] for ln in lines}
        if len(codes) != 1:
            raise ScriptError("%s: field 'reply': all lines must have the same code" % where)
        if when == "data" and text[:1] == "2":
            raise ScriptError("%s: field 'reply' for when=data must be 4xx/5xx "
                              "(the normal 354 is sent when no reply is scripted)" % where)
        if action == "refuse" and text[:1] == "2":
            raise ScriptError("%s: field 'reply' for action 'refuse' must be 4xx/5xx" % where)
    return Rule(i, r)


def parse_script(text, source):
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ScriptError("%s: malformed script, not valid JSON: %s" % (source, exc))
    if not isinstance(data, dict):
        raise ScriptError("%s: script must be a JSON object with a 'rules' list" % source)
    for k in data:
        if k not in TOP_FIELDS:
            raise ScriptError("%s: unknown top-level field %r (known fields: %s)"
                              % (source, k, ", ".join(TOP_FIELDS)))
    rules = data.get("rules", [])
    if not isinstance(rules, list):
        raise ScriptError("%s: field 'rules' must be a list" % source)
    size = data.get("size", DEFAULT_SIZE)
    if not _is_int(size) or size < 0:
        raise ScriptError("%s: field 'size' must be a non-negative integer" % source)
    for k in ("smtputf8", "require_tls"):
        if k in data and not isinstance(data[k], bool):
            raise ScriptError("%s: field %r must be true or false" % (source, k))
    try:
        parsed = [validate_rule(i, r) for i, r in enumerate(rules)]
    except ScriptError as exc:
        raise ScriptError("%s: %s" % (source, exc))
    return Script(parsed, size, data.get("smtputf8", True), data.get("require_tls", False))


def load_script(path):
    if path is None:
        return Script()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ScriptError("%s: cannot read script: %s" % (path, exc))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScriptError("%s: malformed script, not UTF-8: %s" % (path, exc))
    return parse_script(text, path)


# --------------------------------------------------------------------------
# Shared server state


class State:
    def __init__(self, args, script, tls_context):
        self.args = args
        self.script = script
        self.tls_context = tls_context
        self.hostname = args.hostname
        self.conn_counter = 0
        self.accepted = 0
        self.active = set()
        self.record_path = os.path.abspath(args.record)
        self.data_dir = self.record_path + ".d"
        os.makedirs(self.data_dir, exist_ok=True)
        self.record_file = open(self.record_path, "w", encoding="utf-8")

    @property
    def require_tls(self):
        return bool(self.args.require_tls or self.script.require_tls)

    def record(self, event, **fields):
        d = {"event": event}
        if "conn" in fields:
            d["conn"] = fields.pop("conn")
        d["time"] = time.time()
        d.update(fields)
        try:
            self.record_file.write(json.dumps(d, ensure_ascii=False) + "\n")
            self.record_file.flush()
        except (OSError, ValueError) as exc:
            log.error("cannot write record: %s", exc)

    def match(self, stage, sender=None, recipients=()):
        for rule in self.script.rules:
            if rule.when != stage:
                continue
            if rule.times is not None and rule.used >= rule.times:
                continue
            if rule.after_messages is not None and self.accepted < rule.after_messages:
                continue
            if rule.sender is not None:
                if sender is None or norm_sender(sender) != rule.sender:
                    continue
            if rule.address is not None:
                if not any(r.lower() == rule.address for r in recipients):
                    continue
            if rule.domain is not None:
                if not any(r.rpartition("@")[2].lower().rstrip(".") == rule.domain
                           for r in recipients):
                    continue
            rule.used += 1
            return rule
        return None


def fmt_peer(peer):
    if not peer:
        return None
    if isinstance(peer, (tuple, list)) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        if ":" in str(host):
            return "[%s]:%s" % (host, port)
        return "%s:%s" % (host, port)
    return str(peer)


def extract_message_id(content):
    """Value of the first Message-ID header (unfolded, stripped) or None."""
    headers = []
    for raw in content.split(b"\n"):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if line == b"":
            break
        if line[:1] in (b" ", b"\t"):
            if headers:
                headers[-1][1] += line
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            break  # not a header line: end of header section
        headers.append([name, value])
    for name, value in headers:
        if name.strip().lower() == b"message-id":
            return value.strip().decode("utf-8", errors="replace")
    return None


# --------------------------------------------------------------------------
# SMTP protocol


class Dropped(Exception):
    pass


class ScriptedSMTP(SMTP):
    def __init__(self, state, handler, loop):
        script = state.script
        super().__init__(
            handler,
            data_size_limit=(script.size or None),
            enable_SMTPUTF8=script.smtputf8,
            decode_data=False,
            hostname=state.hostname,
            ident="ESMTP scripted_smtp",
            tls_context=state.tls_context,
            require_starttls=False,  # enforced by us at MAIL, with our own reply
            timeout=300,
            loop=loop,
        )
        self.state = state
        self.conn_id = None
        self.tls_active = False
        self._closed_recorded = False
        self._greeting_override = None
        self._greeted = False

    # -- helpers --------------------------------------------------------

    def rec(self, event, **fields):
        self.state.record(event, conn=self.conn_id, **fields)

    async def drop(self):
        """Close the socket right now without replying; never returns normally."""
        t = self._original_transport or self.transport
        if t is not None:
            t.abort()
        # connection_lost() cancels the handler task, which ends this await.
        await self.loop.create_future()
        raise Dropped()

    async def apply(self, stage, rule, default, **info):
        """Return the reply to send at this stage (default if no/passive rule)."""
        if rule is None:
            return default
        action = rule.action
        if action in ("disconnect", "disconnect_mid_data"):
            self.rec("action", stage=stage, action=action, rule=rule.index, **info)
            await self.drop()
        if action == "delay":
            self.rec("action", stage=stage, action="delay", seconds=rule.seconds,
                     rule=rule.index, **info)
            await asyncio.sleep(rule.seconds)
        if action == "accept":
            return default
        if rule.reply is not None:
            self.rec("reply", stage=stage, reply=rule.reply, rule=rule.index, **info)
            return format_reply(rule.reply)
        return default

    # -- connection lifecycle -------------------------------------------

    def connection_made(self, transport):
        if self.conn_id is None:
            st = self.state
            st.conn_counter += 1
            self.conn_id = st.conn_counter
            st.active.add(self)
            self.rec("connect", peer=fmt_peer(transport.get_extra_info("peername")))
        super().connection_made(transport)

    def connection_lost(self, error):
        if not self._closed_recorded:
            self._closed_recorded = True
            self.state.active.discard(self)
            self.rec("close")
        try:
            super().connection_lost(error)
        except Exception:  # double connection_lost after a TLS setup failure
            log.debug("connection_lost", exc_info=True)

    async def push(self, status):
        if not self._greeted:
            self._greeted = True
            if self._greeting_override is not None:
                status = self._greeting_override
        await super().push(status)
        # RFC 5321 3.8: a 421 reply means the server closes the channel.
        if status[:3] in ("421", b"421") and self.transport is not None:
            self.transport.close()

    async def _handle_client(self):
        try:
            rule = self.state.match("connect")
            if rule is not None:
                if rule.action == "refuse":
                    reply = rule.reply or ("554 5.3.2 %s Service refused (scripted)"
                                           % self.hostname)
                    self.rec("reply", stage="connect", reply=reply, rule=rule.index)
                    await super().push(format_reply(reply))
                    self.transport.close()
                    return
                reply = await self.apply("connect", rule, None)
                if reply is not None:
                    if not reply_ok(reply):
                        await super().push(reply)
                        self.transport.close()
                        return
                    self._greeting_override = reply
            await super()._handle_client()
        except (asyncio.CancelledError, Dropped):
            pass
        except (ConnectionError, OSError) as exc:
            log.info("conn %s: connection error: %s", self.conn_id, exc)
        except Exception:
            log.exception("conn %s: unexpected error", self.conn_id)
        finally:
            if self.transport is not None:
                try:
                    self.transport.close()
                except Exception:
                    pass

    # -- commands -------------------------------------------------------

    @syntax('STARTTLS', when='tls_context')
    async def smtp_STARTTLS(self, arg):
        if self.tls_active and not arg:
            await self.push("503 5.5.1 TLS already active")
            return
        was = self._tls_protocol
        await super().smtp_STARTTLS(arg)
        if was is None and self._tls_protocol is not None and self._tls_handshake_okay:
            self.tls_active = True
            try:
                ssl_obj = self.transport.get_extra_info("ssl_object")
            except Exception:
                ssl_obj = None
            extra = {}
            if ssl_obj is not None:
                try:
                    extra["version"] = ssl_obj.version()
                    extra["cipher"] = (ssl_obj.cipher() or [None])[0]
                except Exception:
                    pass
            self.rec("tls", **extra)

    @syntax('MAIL FROM: <address>', extended=' [SP <mail-parameters>]')
    async def smtp_MAIL(self, arg):
        if self.state.require_tls and not self.tls_active:
            reply = "530 5.7.0 Must issue a STARTTLS command first"
            self.rec("reply", stage="mail", reply=reply, rule=None, reason="require_tls")
            await self.push(reply)
            return
        await super().smtp_MAIL(arg)

    @syntax('DATA')
    async def smtp_DATA(self, arg):
        if (self.session.host_name and self.envelope.rcpt_tos and not arg
                and not (self._auth_required and not self.session.authenticated)):
            env = self.envelope
            sender = "" if env.mail_from == "<>" else env.mail_from
            rule = self.state.match("data", sender=sender, recipients=env.rcpt_tos)
            reply = await self.apply("data", rule, None)
            if reply is not None:
                await self.push(reply)
                return
        await super().smtp_DATA(arg)


class Handler:
    """aiosmtpd hooks; `server` is the ScriptedSMTP instance of the connection."""

    def __init__(self, state):
        self.state = state

    def ehlo_lines(self, server):
        st = server.state
        lines = [server.hostname, "PIPELINING"]
        size = server.data_size_limit
        lines.append("SIZE %d" % size if size else "SIZE")
        lines += ["8BITMIME", "ENHANCEDSTATUSCODES"]
        if server.enable_SMTPUTF8:
            lines.append("SMTPUTF8")
        if st.tls_context is not None and not server.tls_active:
            lines.append("STARTTLS")
        return ["250-" + ln for ln in lines[:-1]] + ["250 " + lines[-1]]

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        rule = self.state.match("ehlo")
        reply = await server.apply("ehlo", rule, None, helo=hostname)
        server.rec("ehlo", command="EHLO", helo=hostname, tls=server.tls_active,
                   code=(reply.split("\r\n")[-1][:3] if reply else "250"))
        if reply is not None:
            if reply_ok(reply):
                session.host_name = hostname
            else:
                session.host_name = None
                session.extended_smtp = False
            return reply.split("\r\n")
        session.host_name = hostname
        return self.ehlo_lines(server)

    async def handle_HELO(self, server, session, envelope, hostname):
        rule = self.state.match("ehlo")
        reply = await server.apply("ehlo", rule, None, helo=hostname)
        server.rec("ehlo", command="HELO", helo=hostname, tls=server.tls_active,
                   code=(reply.split("\r\n")[-1][:3] if reply else "250"))
        if reply is not None:
            session.host_name = hostname if reply_ok(reply) else None
            return reply
        session.host_name = hostname
        return "250 %s" % server.hostname

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        sender = "" if address == "<>" else address
        rule = self.state.match("mail", sender=sender)
        reply = await server.apply("mail", rule, "250 2.1.0 OK", sender=sender)
        if reply_ok(reply):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        rule = self.state.match("rcpt", sender=sender, recipients=[address])
        reply = await server.apply("rcpt", rule, "250 2.1.5 OK", address=address)
        if reply_ok(reply):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_DATA(self, server, session, envelope):
        st = self.state
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        rule = st.match("data_end", sender=sender, recipients=envelope.rcpt_tos)
        reply = await server.apply("data_end", rule, None)
        if reply is not None and not reply_ok(reply):
            return reply
        content = envelope.original_content
        if isinstance(content, str):  # cannot happen with decode_data=False
            content = content.encode("utf-8", errors="surrogateescape")
        content = bytes(content)
        st.accepted += 1
        n = st.accepted
        path = os.path.join(st.data_dir, "%d.eml" % n)
        try:
            with open(path, "wb") as f:
                f.write(content)
        except OSError as exc:
            log.error("cannot write %s: %s", path, exc)
        st.record(
            "message",
            conn=server.conn_id,
            n=n,
            sender=sender,
            recipients=list(envelope.rcpt_tos),
            tls=server.tls_active,
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            message_id=extract_message_id(content),
            data_path=path,
            helo=session.host_name,
            mail_options=list(envelope.mail_options),
            rcpt_options=list(envelope.rcpt_options),
        )
        return reply if reply is not None else "250 2.0.0 OK: queued as %d" % n

    async def handle_QUIT(self, server, session, envelope):
        return "221 2.0.0 Bye"

    async def handle_RSET(self, server, session, envelope):
        return "250 2.0.0 OK"

    async def handle_NOOP(self, server, session, envelope, arg):
        return "250 2.0.0 OK"


# --------------------------------------------------------------------------
# main


def parse_listen(s):
    host, sep, port = s.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % s)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        p = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError("bad port in %r" % s)
    if not 0 <= p <= 65535:
        raise argparse.ArgumentTypeError("bad port in %r" % s)
    return host, p


def fail(msg, code=2):
    sys.stderr.write("%s: error: %s\n" % (PROG, msg))
    sys.stderr.flush()
    sys.exit(code)


async def serve(args, state):
    loop = asyncio.get_running_loop()
    handler = Handler(state)
    host, port = args.listen
    try:
        server = await loop.create_server(
            lambda: ScriptedSMTP(state, handler, loop), host, port, reuse_address=True)
    except OSError as exc:
        fail("cannot listen on %s:%d: %s" % (host, port, exc), 1)
    actual = server.sockets[0].getsockname()[1]

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload():
        try:
            state.script = load_script(args.script)
        except ScriptError as exc:
            log.error("reload failed, keeping previous script: %s", exc)
            state.record("reload", ok=False, error=str(exc))
            return
        log.info("script reloaded")
        state.record("reload", ok=True)

    loop.add_signal_handler(signal.SIGHUP, reload)

    sys.stdout.write("READY %d\n" % actual)
    sys.stdout.flush()

    await stop.wait()
    server.close()
    for proto in list(state.active):
        t = proto._original_transport or proto.transport
        if t is not None:
            t.abort()
    deadline = loop.time() + 3
    while state.active and loop.time() < deadline:
        await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(server.wait_closed(), 2)
    except Exception:
        pass


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripted_smtp.py",
                                 description="Scriptable SMTP destination for tests.")
    ap.add_argument("--listen", required=True, type=parse_listen, metavar="HOST:PORT")
    ap.add_argument("--script", metavar="script.json",
                    help="JSON rules (default: accept everything)")
    ap.add_argument("--record", required=True, metavar="record.jsonl")
    ap.add_argument("--tls-cert", metavar="cert.pem")
    ap.add_argument("--tls-key", metavar="key.pem",
                    help="default: key inside --tls-cert")
    ap.add_argument("--require-tls", action="store_true",
                    help="reject MAIL before STARTTLS with 530 5.7.0")
    ap.add_argument("--hostname", default="localhost",
                    help="name in greeting/EHLO (default: localhost)")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)

    logging.basicConfig(stream=sys.stderr,
                        level=logging.DEBUG if args.verbose else logging.WARNING,
                        format=PROG + ": %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # aiosmtpd and asyncio are chatty about clients that vanish; that is
        # what this server is for.
        logging.getLogger("mail.log").setLevel(logging.CRITICAL)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)

    try:
        script = load_script(args.script)
    except ScriptError as exc:
        fail(str(exc))

    tls_context = None
    if args.tls_key and not args.tls_cert:
        fail("--tls-key given without --tls-cert")
    if args.tls_cert:
        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            tls_context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            fail("cannot load TLS certificate/key: %s" % exc)

    try:
        state = State(args, script, tls_context)
    except OSError as exc:
        fail("cannot open record %s: %s" % (args.record, exc))

    try:
        asyncio.run(serve(args, state))
    finally:
        try:
            state.record_file.close()
        except Exception:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
