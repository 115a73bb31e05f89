-- A device may sync one box in several folders (two clones on one machine share its device): each folder
-- keeps its own cursor, named by the id in its .box/config ('' for a client that does not send one), so
-- what one folder applied is never taken for what another did.
CREATE TABLE device_cursors_by_folder (
    device_id INTEGER NOT NULL, box_id INTEGER NOT NULL, folder TEXT NOT NULL DEFAULT '',
    cursor INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (device_id, box_id, folder));
INSERT INTO device_cursors_by_folder (device_id, box_id, folder, cursor, updated)
    SELECT device_id, box_id, '', cursor, updated FROM device_cursors;
DROP TABLE device_cursors;
ALTER TABLE device_cursors_by_folder RENAME TO device_cursors;
