"""The reviewers' inbox: a web app and HTTP API where signed-in reviewers decide gates.

Identity comes from a directory (``directory``: a JSON file; ``pg_directory``: a PostgreSQL
table) or OIDC bearer tokens (``oidc``); every decision is authorized here, signed with the
inbox's own Ed25519 key and sent with the ``review`` update (``deciding``), and the workflow
verifies it again. ``server.serving`` runs it; ``keel inbox`` and ``keel dev`` call that.
"""
