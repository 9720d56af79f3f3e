// Screenshot of flows/queued_completion.json on the Langflow canvas, with the flowcloud
// category open in the sidebar: docs/img/langflow-canvas.png, for the README.
//
// Run `bash shoot.sh` (it starts a throwaway Langflow server, then this); against a server of
// your own with the flowcloud nodes and auto-login: LANGFLOW_URL=http://127.0.0.1:7860 node canvas.mjs [out.png]
// Uses Debian's chromium (`apt-get install chromium`; CHROMIUM=path for another).
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const base = process.env.LANGFLOW_URL ?? "http://127.0.0.1:7860";
const out = resolve(process.argv[2] ?? `${root}/docs/img/langflow-canvas.png`);

async function api(method, path, token, body) {
  const response = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: body && JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

// Import the flow through the API, as the UI's "Import" would.
const { access_token: token } = await api("GET", "/auto_login");
const flow = JSON.parse(readFileSync(`${root}/flows/queued_completion.json`, "utf8"));
const { id } = await api("POST", "/flows/", token, { name: flow.name, description: flow.description, data: flow.data });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`${base}/flow/${id}`, { waitUntil: "networkidle", timeout: 120_000 });
  await page.waitForSelector(".react-flow__node", { timeout: 120_000 });
  await openFlowcloudCategory(page);
  await fitView(page);
  await dismissOnboarding(page);
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
}

// Filter the component sidebar down to the flowcloud nodes, so they show beside the canvas.
async function openFlowcloudCategory(page) {
  const search = page.getByPlaceholder(/search/i).first();
  if (await search.count()) {
    await search.fill("flowcloud");
  }
}

// The sidebar narrows the canvas after the first fit: fit the nodes again (Ctrl+1, "Zoom To Fit").
async function fitView(page) {
  await page.locator(".react-flow__pane").click({ position: { x: 20, y: 20 } });
  await page.keyboard.press("Control+1");
  await page.waitForTimeout(1500); // let the fit animation settle
}

// Langflow's "Try the new Assistant" tip would cover the canvas controls.
async function dismissOnboarding(page) {
  const dismiss = page.getByLabel("Dismiss assistant onboarding tooltip");
  if (await dismiss.isVisible()) {
    await dismiss.click();
    await page.waitForTimeout(500);
  }
  await page.mouse.move(700, 150); // over empty canvas: no hover highlight in the picture
}
