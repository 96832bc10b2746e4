-- The upstream's ids of each request (issue 13's request drawer): the `request-id` header of the
-- answer that served it (or of the failure relayed), and the message id (`msg_…`) of its body
-- (`message_start`'s `message.id` in a stream, `id` of a JSON message). They let a user quote a
-- request to Anthropic's support. NULL when there was no upstream answer, or it had none.
ALTER TABLE requests ADD COLUMN upstream_request_id TEXT;
ALTER TABLE requests ADD COLUMN message_id TEXT;
