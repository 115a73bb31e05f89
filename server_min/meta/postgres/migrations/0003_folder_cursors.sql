-- A device may sync one box in several folders (two clones on one machine share its device): each folder
-- keeps its own cursor, named by the id in its .box/config ('' for a client that does not send one), so
-- what one folder applied is never taken for what another did.
ALTER TABLE device_cursors ADD COLUMN folder TEXT NOT NULL DEFAULT '';
ALTER TABLE device_cursors DROP CONSTRAINT device_cursors_pkey;
ALTER TABLE device_cursors ADD PRIMARY KEY (device_id, box_id, folder);
