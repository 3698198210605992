#!/usr/bin/python3
"""Parses a delivery status notification with Python's email package and prints what it
found as one JSON object, for DSNTests to check against a real MIME parser.

Usage: parse_dsn.py FILE

The DSN is parsed with email.message_from_bytes(policy=email.policy.default). One with
8-bit octets (RFC 6532/6533) must be valid UTF-8, else the script fails.

Output:
  {"content_type", "report_type", "boundary", "transfer_encoding",
   "from", "to", "subject", "date", "message_id", "auto_submitted", "mime_version",
   "defects": ["<path>: <defect>", ...],   # msg.defects of every part and sub-message, and
                                           # of the attached header section parsed back
   "header_defects": ["<name>: <defect>"], # the DSN's own header fields, as parsed
   "parts": [{"content_type", "charset", "transfer_encoding", "description"}, ...],
   "text": the text/plain part, decoded,
   "per_message": {field: value},          # the delivery-status part's first group
   "per_recipient": [{field: value}, ...], # its other groups
   "original_headers": [[name, value], ...]}  # the attached header section

Field values are the email package's raw values, unfolded (CRLF removed), 8-bit octets
decoded as UTF-8 (the email package keeps them as surrogate escapes).
message/delivery-status is parsed by the email package into one sub-message per group.
message/global-delivery-status is not known to it: it parses that part like message/rfc822
(the first group as header fields, the others as the body), so the body's groups are parsed
here with email.parser.HeaderParser, one per blank-line-separated block.
"""
import email
import email.errors
import email.parser
import email.policy
import json
import re
import sys

POLICY = email.policy.default

# The attached header section has no body: what Python says of a multipart message without
# its parts is expected there, and only there.
MISSING_BODY = (email.errors.StartBoundaryNotFoundDefect, email.errors.CloseBoundaryNotFoundDefect,
                email.errors.NoBoundaryInMultipartDefect, email.errors.MultipartInvariantViolationDefect)


def text(value):
    """A raw header value as text: surrogate escapes (8-bit octets) decoded as UTF-8."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def unfold(value):
    return re.sub(r"\r?\n", "", text(value))


def fields(message):
    return {name: unfold(value) for name, value in message.raw_items()}


def main():
    with open(sys.argv[1], "rb") as file:
        octets = file.read()
    octets.decode("utf-8")
    message = email.message_from_bytes(octets, policy=POLICY)

    defects = []

    def collect(part, path):
        defects.extend(f"{path}: {defect!r}" for defect in part.defects)
        if part.get_content_type() == "message/global-headers":
            collect_original_headers(part.get_payload(0), f"{path}/0")
        elif part.is_multipart():
            for index, sub in enumerate(part.get_payload()):
                collect(sub, f"{path}/{index}")

    def collect_original_headers(headers, path):
        defects.extend(f"{path}: {defect!r}" for defect in headers.defects if not isinstance(defect, MISSING_BODY))

    collect(message, "message")
    header_defects = [f"{name}: {defect!r}" for name, value in message.items() for defect in getattr(value, "defects", ())]

    result = {
        "content_type": message.get_content_type(),
        "report_type": message.get_param("report-type"),
        "boundary": message.get_boundary(),
        "transfer_encoding": message.get("Content-Transfer-Encoding"),
        "defects": defects,
        "header_defects": header_defects,
        "parts": [],
        "per_recipient": [],
    }
    own_fields = fields(message)
    for name in ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version"]:
        result[name.lower().replace("-", "_")] = own_fields.get(name)

    for part in message.iter_parts():
        content_type = part.get_content_type()
        result["parts"].append({
            "content_type": content_type,
            "charset": part.get_param("charset"),
            "transfer_encoding": part.get("Content-Transfer-Encoding"),
            "description": part.get("Content-Description"),
        })
        if content_type == "text/plain":
            result["text"] = part.get_content()
        elif content_type == "message/delivery-status":
            groups = part.get_payload()
            result["per_message"] = fields(groups[0])
            result["per_recipient"] = [fields(group) for group in groups[1:]]
        elif content_type == "message/global-delivery-status":
            inner = part.get_payload(0)
            result["per_message"] = fields(inner)
            for block in re.split(r"\r?\n\r?\n", inner.get_payload(decode=True).decode("utf-8").strip("\r\n")):
                if block:
                    result["per_recipient"].append(fields(email.parser.HeaderParser(policy=POLICY).parsestr(block)))
        elif content_type == "text/rfc822-headers":
            headers = email.parser.BytesHeaderParser(policy=POLICY).parsebytes(part.get_payload(decode=True))
            collect_original_headers(headers, "original-headers")
            result["original_headers"] = [[name, unfold(value)] for name, value in headers.raw_items()]
        elif content_type == "message/global-headers":
            headers = part.get_payload(0)
            result["original_headers"] = [[name, unfold(value)] for name, value in headers.raw_items()]
    json.dump(result, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
