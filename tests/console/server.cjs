// Starts `commcare serve` on a temporary data directory and a loopback port, with an admin
// (superuser) and a domain, for the console tests; and small API helpers.
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');

const ADMIN = ['admin', 'adminpw'];
const DOMAIN = 'doma';

async function startServer(commcare) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-console-'));
  const env = { ...process.env, COMMCARE_ADMIN_USER: ADMIN[0], COMMCARE_ADMIN_PASSWORD: ADMIN[1],
    COMMCARE_DOMAIN: DOMAIN };
  const proc = spawn(commcare, ['serve', '--data', path.join(tmp, 'data'), '--listen', '127.0.0.1:0'],
    { env, stdio: ['ignore', 'pipe', fs.openSync(path.join(tmp, 'stderr.log'), 'w')] });
  const lines = readline.createInterface({ input: proc.stdout });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start')), 30000);
    lines.on('line', line => {
      try {
        const hello = JSON.parse(line);
        if (hello.listening) { clearTimeout(timer); resolve(Number(hello.listening.split(':').pop())); }
      } catch (e) { /* not JSON */ }
    });
    proc.on('exit', code => reject(new Error(`server exited ${code}: ` +
      fs.readFileSync(path.join(tmp, 'stderr.log'), 'utf8'))));
  });
  const base = `http://127.0.0.1:${port}`;
  return {
    base, tmp,
    stop() { proc.kill('SIGTERM'); },
    basic(user = ADMIN) {
      return 'Basic ' + Buffer.from(`${user[0]}:${user[1]}`).toString('base64');
    },
    // A form with one case block (create on first use; indices: [{name, type, id,
    // relationship}]), through the receiver.
    async submit(caseId, props, { create = false, name = 'Alice', xmlns = 'http://example/visit',
      indices = [] } = {}) {
      const formId = require('crypto').randomUUID().replace(/-/g, '');
      const update = Object.entries(props).map(([k, v]) => `<${k}>${v}</${k}>`).join('');
      const xml = `<?xml version="1.0"?><data xmlns="${xmlns}"><meta xmlns="http://openrosa.org/jr/xforms">` +
        `<instanceID>${formId}</instanceID><username>admin</username></meta>` +
        `<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="${caseId}" ` +
        `date_modified="${new Date().toISOString().replace(/\.\d+Z$/, "Z")}">` +
        (create ? `<create><case_type>patient</case_type><case_name>${name}</case_name>` +
          `<owner_id>o1</owner_id></create>` : '') +
        `<update>${update}</update>` + (indices.length ? '<index>' + indices.map(i =>
          `<${i.name} case_type="${i.type}"${i.relationship ? ` relationship="${i.relationship}"` : ''}>` +
          `${i.id}</${i.name}>`).join('') + '</index>' : '') + '</case></data>';
      const r = await fetch(`${base}/a/${DOMAIN}/receiver/api/`, { method: 'POST', body: xml,
        headers: { Authorization: this.basic(), 'Content-Type': 'text/xml' } });
      if (r.status !== 201) throw new Error(`submit: ${r.status} ${await r.text()}`);
      return formId;
    },
  };
}

module.exports = { startServer, ADMIN, DOMAIN };
