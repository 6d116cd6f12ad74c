"""Print a mail file as JSON, parsed by Python's email package (an independent
RFC 5322 / MIME parser), for mlci-notify's tests.

    python3 parse_mail.py FILE

{"headers": [[name, decoded value], ...], "defects": [...], "content_type": ...,
 "structure": ["multipart/mixed", "multipart/alternative", ...],
 "text": ..., "html": ..., "attachments": [{"filename", "content_type", "hex"}]}
"""

import email
import email.policy
import json
import sys


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    defects = []
    structure = []
    for part in msg.walk():
        structure.append(part.get_content_type())
        defects.extend(f"{part.get_content_type()}: {d!r}" for d in part.defects)
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    out = {
        "headers": [[k, str(v)] for k, v in msg.items()],
        "defects": defects,
        "content_type": msg.get_content_type(),
        "structure": structure,
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
        "attachments": [
            {
                "filename": a.get_filename(),
                "content_type": a.get_content_type(),
                "hex": a.get_payload(decode=True).hex(),
            }
            for a in msg.iter_attachments()
        ],
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
