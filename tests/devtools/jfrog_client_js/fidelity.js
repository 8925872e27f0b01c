// Drives a JFrog platform (here: the local stand-in) with JFrog's own JavaScript client, jfrog-client-js.
// Calls the client wraps go through its API; deploys and the artifact summary, which it does not wrap, go
// through its HttpClient (its auth, retries and axios stack) with the request shapes of the JFrog CLI.
// Prints one JSON line per call: {"call", "ok", "detail"}. Usage: JFROG_URL=... JFROG_ACCESS_TOKEN=... node fidelity.js
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { JfrogClient, HttpClient } = require('jfrog-client-js');

const url = process.env.JFROG_URL;
const token = process.env.JFROG_ACCESS_TOKEN;
const repo = process.env.JFROG_TEST_REPO || 'ml-models-local';
const redirectRepo = process.env.JFROG_REDIRECT_REPO || '';
const prefix = `js-fidelity/${crypto.randomBytes(4).toString('hex')}`;
const quiet = { error: () => {}, warn: () => {}, debug: () => {} };

const client = new JfrogClient({ platformUrl: url, accessToken: token, logger: quiet, retries: 0 });
const artifactory = client.artifactory();
const xray = client.xray();
const rawArtifactory = new HttpClient({ serverUrl: `${url}/artifactory/`, accessToken: token, retries: 0 }, quiet);
const rawXray = new HttpClient({ serverUrl: `${url}/xray/`, accessToken: token, retries: 0 }, quiet);

const digest = (kind, data) => crypto.createHash(kind).update(data).digest('hex');
const results = [];

async function step(call, body) {
  try {
    const detail = await body();
    results.push({ call, ok: true, detail });
  } catch (err) {
    const status = err && err.response ? ` (HTTP ${err.response.status})` : '';
    results.push({ call, ok: false, detail: `${err && err.message ? err.message : err}${status}` });
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

async function main() {
  const data = crypto.randomBytes(32 * 1024);
  const sums = { sha1: digest('sha1', data), sha256: digest('sha256', data), md5: digest('md5', data) };
  const target = `${prefix}/model.bin`;

  await step('artifactory ping', async () => {
    expect(await artifactory.system().ping(), 'ping answered false');
    return 'OK';
  });
  await step('artifactory version', async () => {
    const version = await artifactory.system().version();
    expect(version && version.version, `no version in ${JSON.stringify(version)}`);
    return version.version;
  });
  await step('deploy with checksum headers and matrix properties', async () => {
    const resp = await rawArtifactory.doAuthRequest({
      url: `${repo}/${target};model.name=fidelity;model.stage=a%5C%2Cb,c`, method: 'PUT', data,
      headers: { 'X-Checksum-Sha1': sums.sha1, 'X-Checksum-Sha256': sums.sha256, 'X-Checksum': sums.sha256,
                 'X-Checksum-Md5': sums.md5, 'Content-Type': 'application/octet-stream' },
    });
    expect(resp.status === 201, `status ${resp.status}`);
    expect(resp.data.checksums.sha256 === sums.sha256, `stored sha256 ${resp.data.checksums.sha256}`);
    return `201, size ${resp.data.size}`;
  });
  await step('checksum deploy (no bytes)', async () => {
    const resp = await rawArtifactory.doAuthRequest({
      url: `${repo}/${prefix}/copy.bin`, method: 'PUT', data: '',
      headers: { 'X-Checksum-Deploy': 'true', 'X-Checksum-Sha1': sums.sha1, 'X-Checksum-Sha256': sums.sha256 },
    });
    expect(resp.status === 201 || resp.status === 200, `status ${resp.status}`);
    return `${resp.status}, sha256 ${resp.data.checksums.sha256.slice(0, 12)}`;
  });
  await step('checksum HEAD', async () => {
    const got = await artifactory.download().getArtifactChecksum(`${repo}/${target}`);
    expect(got.sha256 === sums.sha256 && got.sha1 === sums.sha1 && got.md5 === sums.md5,
      `checksums ${JSON.stringify(got)}`);
    return 'sha1, sha256, md5 match';
  });
  await step('download with checksum', async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'jfrog-js-')), 'model.bin');
    await artifactory.download().downloadArtifactToFile(`${repo}/${target}`, file);
    const got = digest('sha256', fs.readFileSync(file));
    expect(got === sums.sha256, `downloaded sha256 ${got}`);
    return 'sha256 matches';
  });
  if (redirectRepo) {
    await step('download redirected to cloud storage', async () => {
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'jfrog-js-')), 'model.bin');
      await artifactory.download().downloadArtifactToFile(`${redirectRepo}/model.bin`, file);
      const expected = (await rawArtifactory.doAuthRequest({
        url: `api/storage/${redirectRepo}/model.bin`, method: 'GET' })).data.checksums.sha256;
      const got = digest('sha256', fs.readFileSync(file));
      expect(got === expected, `downloaded sha256 ${got}, storage API says ${expected}`);
      return 'followed the 302 without forwarding the token; sha256 matches the storage API';
    });
  }
  await step('AQL with property criteria and includes', async () => {
    const query = `items.find({"repo":"${repo}","path":"${prefix}","@model.name":"fidelity"})` +
      '.include("repo","path","name","sha256","property")';
    const answer = await artifactory.search().aqlSearch(query);
    expect(answer.results.length === 1, `${answer.results.length} rows`);
    const row = answer.results[0];
    const stages = row.properties.filter((p) => p.key === 'model.stage').map((p) => p.value).sort();
    expect(row.sha256 === sums.sha256, `row sha256 ${row.sha256}`);
    expect(JSON.stringify(stages) === '["a,b","c"]', `model.stage values ${JSON.stringify(stages)}`);
    return `1 row, model.stage = ${JSON.stringify(stages)}`;
  });
  await step('xray ping', async () => {
    expect(await xray.system().ping(), 'ping answered false');
    return 'pong';
  });
  await step('xray version', async () => {
    const version = await xray.system().version();
    expect(version && version.xray_version, `no xray_version in ${JSON.stringify(version)}`);
    return version.xray_version;
  });
  await step('xray graph scan with polling', async () => {
    let polls = 0;
    const progress = { setPercentage: () => { polls += 1; } };
    const graph = { component_id: 'root', nodes: [{ component_id: 'pypi://requests:2.32.3' }] };
    const result = await xray.scan().graph(graph, progress, () => {}, undefined, undefined, undefined, undefined, 50);
    expect(result && result.scan_id, `no scan_id in ${JSON.stringify(result)}`);
    expect(Array.isArray(result.vulnerabilities), 'no vulnerabilities list');
    return `scan ${result.scan_id}, ${result.vulnerabilities.length} vulnerabilities`;
  });
  await step('xray component summary', async () => {
    const answer = await xray.summary().component({ component_details: [{ component_id: 'pypi://requests:2.32.3' }] });
    expect(Array.isArray(answer.artifacts), `no artifacts list in ${JSON.stringify(answer)}`);
    return `${answer.artifacts.length} artifact(s)`;
  });
  await step('xray artifact summary', async () => {
    const resp = await rawXray.doAuthRequest({ url: 'api/v2/summary/artifact', method: 'POST',
      data: { checksums: [sums.sha256] }, validateStatus: (s) => s === 200 });
    expect(Array.isArray(resp.data.artifacts), `no artifacts list in ${JSON.stringify(resp.data)}`);
    const errors = resp.data.errors || [];
    return `${resp.data.artifacts.length} artifact(s), ${errors.length} error(s)`;
  });
}

main()
  .catch((err) => results.push({ call: 'script', ok: false, detail: String(err) }))
  .finally(() => {
    for (const r of results) process.stdout.write(`${JSON.stringify(r)}\n`);
  });
