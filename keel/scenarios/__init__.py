"""The built-in apps, each a self-contained folder built on the engine as a team's own app
would be: ``contract_review``, ``support_email``, ``incident``, ``ingestion``. They are
registered in the ``keel.apps`` entry-point group; the engine never imports them."""
