-- Seed data for the local run's SQLite database.
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer TEXT NOT NULL,
    email TEXT NOT NULL,
    total TEXT NOT NULL, -- decimal as text: SQLite's NUMERIC would round it through a float
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    placed_at DATETIME NOT NULL,
    notes TEXT
);
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    referrer TEXT
);
INSERT INTO orders VALUES
    (42, 'Ada Lovelace', 'ada@example.com', '129.90', 'EUR', 'paid', '2026-11-30 08:00:00', NULL),
    (43, 'Smith & Sons <!channel>', 'buyers@smith.example', '18.00', 'USD', 'pending', '2026-11-30 08:05:00',
     'Please call <@U024BE7LH> before delivery & leave it at <https://evil.example|the door>');
INSERT INTO users VALUES
    (7, 'Grace Hopper', 'team', NULL),
    (8, 'Katherine Johnson', 'free', 'Grace Hopper'),
    (9, 'Margaret Hamilton', 'free', NULL);
