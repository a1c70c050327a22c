-- The reputation system: one score per subject, 0 to 100, starting at
-- 100, lowered by violations and recovering over time.
CREATE TABLE reputation (
    subject     text PRIMARY KEY,
    score       double precision NOT NULL DEFAULT 100 CHECK (score >= 0 AND score <= 100),
    violations  bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reputation_score ON reputation (score);
