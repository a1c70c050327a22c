-- The rate-limiting schema: runtime rules, the quota ledger, violations,
-- per-minute usage roll-ups, alerts and the audit log.

-- Runtime rules layered over the YAML, one per subject
-- ("key:acme-prod", "user:alice", "plan:free"). A NULL list inherits.
CREATE TABLE rate_limit_configs (
    id          text PRIMARY KEY,
    subject     text NOT NULL UNIQUE,
    rate        jsonb,
    quota       jsonb,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rate_limit_configs_expires_at ON rate_limit_configs (expires_at) WHERE expires_at IS NOT NULL;

-- The durable quota ledger: the absolute usage of each counter in each
-- period, with the hot path's version of it. A write lands only when its
-- seq is higher, so replays and reordering are harmless.
CREATE TABLE quota_usage (
    counter       text        NOT NULL,
    period_start  timestamptz NOT NULL,
    used          bigint      NOT NULL CHECK (used >= 0),
    seq           bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (counter, period_start)
);
CREATE INDEX quota_usage_period_start ON quota_usage (period_start);

-- Refused requests (and shadow limits that would have refused). The id is
-- made by the replica that saw it, so a retried batch inserts nothing twice.
CREATE TABLE violations (
    id          text PRIMARY KEY,
    at          timestamptz NOT NULL,
    subject     text NOT NULL,
    key_id      text NOT NULL DEFAULT '',
    user_id     text NOT NULL DEFAULT '',
    plan        text NOT NULL DEFAULT '',
    route       text NOT NULL DEFAULT '',
    method      text NOT NULL,
    path        text NOT NULL,
    limit_name  text NOT NULL,
    limit_value bigint NOT NULL,
    window_ms   bigint,             -- rate limits
    period      text,               -- quotas: hourly, daily, weekly, monthly
    kind        text NOT NULL CHECK (kind IN ('rate_limited', 'quota_exceeded')),
    shadow      boolean NOT NULL DEFAULT false
);
CREATE INDEX violations_at ON violations (at DESC, id DESC);
CREATE INDEX violations_subject_at ON violations (subject, at DESC, id DESC);

-- Per-minute counts per subject and route. Each replica writes its own
-- absolute counts for a minute, so rewriting a row is idempotent; views
-- sum over replicas.
CREATE TABLE usage_rollups (
    minute          timestamptz NOT NULL,
    subject         text   NOT NULL,
    route           text   NOT NULL DEFAULT '',
    replica         text   NOT NULL,
    user_id         text   NOT NULL DEFAULT '',
    allowed         bigint NOT NULL DEFAULT 0,
    rate_limited    bigint NOT NULL DEFAULT 0,
    quota_exceeded  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, subject, route, replica)
);
CREATE INDEX usage_rollups_subject_minute ON usage_rollups (subject, minute);

-- Alert rules created through the admin API (YAML rules live in the file).
CREATE TABLE alert_rules (
    name        text PRIMARY KEY,
    expr        text NOT NULL,
    for_ms      bigint NOT NULL DEFAULT 0,
    notify      jsonb NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Fired alerts and their resolution.
CREATE TABLE alerts (
    id           text PRIMARY KEY,
    rule         text NOT NULL,
    state        text NOT NULL CHECK (state IN ('firing', 'resolved')),
    value        double precision NOT NULL,
    message      text NOT NULL,
    fired_at     timestamptz NOT NULL,
    resolved_at  timestamptz
);
CREATE INDEX alerts_fired_at ON alerts (fired_at DESC);

-- Who changed what through the admin API.
CREATE TABLE audit_log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,
    action   text NOT NULL,
    subject  text NOT NULL DEFAULT '',
    detail   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at DESC);
