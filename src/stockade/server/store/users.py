"""Users, passwords, sessions and API tokens (users' and clusters')."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, insert, select, update

from stockade.server import db as t
from stockade.server.store.base import (
    ROLES,
    SESSION_TTL,
    USER_TOKEN_TTL,
    BadRequest,
    Conflict,
    NotFound,
    Principal,
    StoreBase,
    burn_password_check,
    check_password,
    hash_password,
    needs_rehash,
    token_hash,
)


class UsersStore(StoreBase):
    def create_user(self, name: str, password: str, role: str, actor: str = "system") -> int:
        if role not in ROLES:
            raise BadRequest(f"role {role!r}: use one of {', '.join(ROLES)}")
        if not name or len(name) > 200:
            raise BadRequest("a user name is 1 to 200 characters")
        if len(password) < 8:
            raise BadRequest("a password has at least 8 characters")
        with self.engine.begin() as con:
            if con.execute(select(t.users.c.id).where(t.users.c.name == name)).first():
                raise Conflict(f"user {name!r} exists")
            uid = con.execute(
                insert(t.users).values(
                    name=name, password_hash=hash_password(password), role=role, created_at=time.time(), disabled=False
                )
            ).inserted_primary_key
            self.audit(con, actor, "user.create", name, {"role": role})
        assert uid is not None
        return int(uid[0])

    def set_password(self, name: str, password: str, actor: str = "system") -> None:
        if len(password) < 8:
            raise BadRequest("a password has at least 8 characters")
        with self.engine.begin() as con:
            n = con.execute(
                update(t.users).where(t.users.c.name == name).values(password_hash=hash_password(password))
            ).rowcount
            if not n:
                raise NotFound(f"no user {name!r}")
            self.audit(con, actor, "user.password", name)

    def users(self) -> list[dict[str, Any]]:
        cols = (t.users.c.id, t.users.c.name, t.users.c.role, t.users.c.created_at, t.users.c.disabled)
        with self.engine.connect() as con:
            rows = con.execute(select(*cols).order_by(t.users.c.name)).all()
        return [dict(r._mapping) for r in rows]

    def set_user_disabled(self, name: str, disabled: bool, actor: str) -> None:
        """Disable a user (their sessions and API tokens stop working; within 10 s in other server processes) or
        enable them again. The last enabled admin cannot be disabled."""
        with self.engine.begin() as con:
            row = con.execute(select(t.users.c.id, t.users.c.role).where(t.users.c.name == name)).first()
            if row is None:
                raise NotFound(f"no user {name!r}")
            if disabled and row.role == "admin":
                admins = con.execute(
                    select(func.count()).where(t.users.c.role == "admin", t.users.c.disabled.is_(False))
                ).scalar_one()
                if admins <= 1:
                    raise Conflict(f"{name!r} is the last enabled admin; enable or create another admin first")
            con.execute(update(t.users).where(t.users.c.id == row.id).values(disabled=disabled))
            self.audit(con, actor, "user.disable" if disabled else "user.enable", name)
        with self._lock:
            self._token_cache.clear()

    def login(self, name: str, password: str, client: str = "") -> str | None:
        """A dashboard session token for a correct name and password, else None (written to the audit log, with
        the client's address). A name that matches no user costs the same password check, so the time taken does
        not tell whether it exists; a hash of an older scheme is replaced at a successful login."""
        with self.engine.connect() as con:
            row = con.execute(select(t.users).where(t.users.c.name == name, t.users.c.disabled.is_(False))).first()
        if row is None:
            burn_password_check(password)
        if row is None or not check_password(password, row.password_hash):
            with self.engine.begin() as con:
                self.audit(con, name[:200], "login.failed", name[:200], {"client": client})
            return None
        if needs_rehash(row.password_hash):
            with self.engine.begin() as con:
                con.execute(update(t.users).where(t.users.c.id == row.id).values(password_hash=hash_password(password)))
        return self._new_token("session", f"session {name}", user_id=row.id, ttl=SESSION_TTL, actor=name)

    def create_user_token(self, user: str, name: str, actor: str, ttl: float | None = USER_TOKEN_TTL) -> str:
        """A new API token acting as ``user``, valid for ``ttl`` seconds (None: until revoked)."""
        with self.engine.connect() as con:
            row = con.execute(select(t.users.c.id).where(t.users.c.name == user)).first()
        if row is None:
            raise NotFound(f"no user {user!r}")
        return self._new_token("user", name[:200], user_id=row.id, ttl=ttl, actor=actor)

    def revoke_token(self, secret: str, actor: str) -> None:
        h = token_hash(secret)
        with self.engine.begin() as con:
            con.execute(update(t.tokens).where(t.tokens.c.hash == h).values(revoked=True))
            self.audit(con, actor, "token.revoke", h[:12])
        with self._lock:
            self._token_cache.pop(h, None)

    def tokens(self, user: str | None = None, include_sessions: bool = False) -> list[dict[str, Any]]:
        """API and cluster tokens (never their secrets), newest first; only ``user``'s when given."""
        tk = t.tokens
        stmt = (
            select(tk.c.id, tk.c.kind, tk.c.name, tk.c.created_at, tk.c.expires_at, tk.c.revoked,
                   t.users.c.name.label("user"), t.clusters.c.name.label("cluster"))
            .select_from(tk.outerjoin(t.users).outerjoin(t.clusters))
            .order_by(tk.c.id.desc())
        )
        if user is not None:
            stmt = stmt.where(t.users.c.name == user)
        if not include_sessions:
            stmt = stmt.where(tk.c.kind != "session")
        now = time.time()
        with self.engine.connect() as con:
            rows = [dict(r._mapping) for r in con.execute(stmt).all()]
        for r in rows:
            r["expired"] = r["expires_at"] is not None and r["expires_at"] <= now
            r["active"] = not r["revoked"] and not r["expired"]
        return rows

    def token_owner(self, token_id: int) -> tuple[str, str | None]:
        """(kind, owning user name or None) of a token; NotFound when there is none."""
        with self.engine.connect() as con:
            row = con.execute(
                select(t.tokens.c.kind, t.users.c.name)
                .select_from(t.tokens.outerjoin(t.users))
                .where(t.tokens.c.id == token_id)
            ).first()
        if row is None:
            raise NotFound(f"no token {token_id}")
        return str(row.kind), row.name

    def revoke_token_id(self, token_id: int, actor: str) -> None:
        """Revoke a token by its id (as listed): it stops working at once here, within 10 s in other processes."""
        with self.engine.begin() as con:
            row = con.execute(select(t.tokens.c.hash, t.tokens.c.name).where(t.tokens.c.id == token_id)).first()
            if row is None:
                raise NotFound(f"no token {token_id}")
            con.execute(update(t.tokens).where(t.tokens.c.id == token_id).values(revoked=True))
            self.audit(con, actor, "token.revoke", f"{token_id} {row.name}"[:300])
        with self._lock:
            self._token_cache.pop(row.hash, None)

    def principal(self, secret: str) -> Principal | None:
        """Who holds this token (cached for 10 s: a revoked token stops working within that time)."""
        h = token_hash(secret)
        now = time.monotonic()
        with self._lock:
            hit = self._token_cache.get(h)
        if hit and hit[0] > now:
            return hit[1]
        with self.engine.connect() as con:
            row = con.execute(
                select(
                    t.tokens.c.id,
                    t.tokens.c.kind,
                    t.tokens.c.cluster_id,
                    t.tokens.c.expires_at,
                    t.tokens.c.revoked,
                    t.users.c.id.label("uid"),
                    t.users.c.name.label("user"),
                    t.users.c.role,
                    t.users.c.disabled,
                    t.clusters.c.name.label("cluster"),
                )
                .select_from(t.tokens.outerjoin(t.users).outerjoin(t.clusters))
                .where(t.tokens.c.hash == h)
            ).first()
        p: Principal | None = None
        if row is not None and not row.revoked and (row.expires_at is None or row.expires_at > time.time()):
            if row.kind == "cluster" and row.cluster_id is not None:
                p = Principal(f"cluster:{row.cluster}", "cluster", "cluster", cluster_id=row.cluster_id)
            elif row.uid is not None and not row.disabled:
                p = Principal(row.user, row.role, row.kind, user_id=row.uid)
        with self._lock:
            if len(self._token_cache) > 10_000:
                self._token_cache.clear()
            self._token_cache[h] = (now + 10.0, p)
        return p
