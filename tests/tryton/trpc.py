"""Minimal raw JSON-RPC client for trytond, used only by the test setup
(fixture.py). The daemon's own client is Rust (src/erp/tryton/rpc.rs); this
one exists so the template database can be prepared before any Rust runs."""
import base64
import decimal
import json
import urllib.error
import urllib.request


def _default(o):
    if isinstance(o, decimal.Decimal):
        return {'__class__': 'Decimal', 'decimal': str(o)}
    raise TypeError(repr(o))


class RPCError(Exception):
    def __init__(self, method, error):
        super().__init__(f'{method}: {error}')
        self.error = error


class Client:
    def __init__(self, url, db):
        self.url = f'{url.rstrip("/")}/{db}/rpc/'
        self.auth = None
        self.user_id = None
        self._id = 0

    def _post(self, method, params, auth=True):
        self._id += 1
        body = json.dumps({'id': self._id, 'method': method,
                'params': params}, default=_default).encode()
        req = urllib.request.Request(self.url, data=body, method='POST',
            headers={'Content-Type': 'application/json'})
        if auth and self.auth:
            req.add_header('Authorization', self.auth)
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RPCError(method, f'HTTP {e.code}') from e
        if 'error' in data:
            raise RPCError(method, data['error'])
        return data['result']

    def login(self, login, password):
        user_id, session, _ = self._post('common.db.login',
            [login, {'password': password}, 'en'], auth=False)
        token = base64.b64encode(
            f'{login}:{user_id}:{session}'.encode()).decode()
        self.auth = f'Session {token}'
        self.user_id = user_id

    def call(self, method, *params):
        return self._post(method, list(params))
