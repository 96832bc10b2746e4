-- The whole Messages API (issue 17). Server tools' calls of each request (`usage.server_tool_use`:
-- web searches are priced per search, fetches are counted only), and the batch or file a request
-- created: batches and files belong to the organisation of the account that made them, so later
-- requests for that id go to that account, also after a restart (read back at start from here).
ALTER TABLE requests ADD COLUMN web_search_requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN web_fetch_requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN resource_id TEXT;
CREATE INDEX requests_resource_id ON requests (resource_id) WHERE resource_id IS NOT NULL;
