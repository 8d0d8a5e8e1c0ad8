"""The feature registry: a metadata catalog of feature tables and volumes in object storage.

The registry describes data it never copies or proxies: it validates a location and detects
its schema at registration, keeps versions, status and lineage, and hands out temporary access
(GCS V4 signed URLs for `gs://`, HMAC-signed Range-capable download URLs for `file://`) to users
holding a bearer token with a grant on the datastack, within a daily byte quota, writing every
grant and every refusal to an audit log.
"""
