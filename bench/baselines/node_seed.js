// node-seed: ThunderStack's reference webhook handler, written the way its documentation shows it.
// Node's `http`, the public key kept as a PEM string, and a fresh crypto.createVerify('RSA-SHA256')
// that parses that PEM on every request; 403 on a bad signature, 200 otherwise.
// Used only as a baseline by bench/run.py:  node node_seed.js PORT PUBLIC_KEY_FILE [HOST]
'use strict';

const http = require('http');
const crypto = require('crypto');
const fs = require('fs');

const [port, keyFile, host = '127.0.0.1'] = process.argv.slice(2);
// The docs fetch the key from /api/webhook-public-key once and keep the PEM text.
const PUBLIC_KEY = fs.readFileSync(keyFile, 'utf8');

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const signature = req.headers['x-thunderstack-signature'];

    const verifier = crypto.createVerify('RSA-SHA256');
    verifier.update(body);
    let valid = false;
    try {
      valid = Boolean(signature) && verifier.verify(PUBLIC_KEY, signature, 'base64');
    } catch (err) {
      valid = false;
    }
    if (!valid) {
      res.writeHead(403, { 'Content-Type': 'text/plain' });
      res.end('Invalid signature');
      return;
    }

    const event = JSON.parse(body.toString('utf8'));
    void event; // the docs hand the event to the application here
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('OK');
  });
});

server.listen(Number(port), host, () => console.log(`node-seed listening on ${host}:${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
