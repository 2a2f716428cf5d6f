-- A resend counts as a duplicate only when its bytes are the same: a message that reuses
-- a control id with different content (a corrected DFT) is stored, never dropped.
ALTER TABLE messages ADD COLUMN content_hash {text};
