-- Message search by channel + message type walks newest-first without reading every
-- message of that type in other channels (bench/search.py: "channel + message type").
CREATE INDEX messages_channel_type_id ON messages (channel, message_type, id);
