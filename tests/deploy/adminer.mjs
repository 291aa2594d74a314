// Logs in to Adminer in headless Chromium the way a person would, with the values the README
// gives, and checks that a wrong password is refused and that the rollup's snapshot table and
// view are there with rows in them.
// Screenshots go to $SHOTS. Run by scripts/test-compose; exits non-zero with a reason on failure.
import { chromium } from "playwright-core";

const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = need("ADMINER_URL");
const login = {
  system: need("LOGIN_SYSTEM"),
  server: need("LOGIN_SERVER"),
  username: need("LOGIN_USERNAME"),
  password: need("LOGIN_PASSWORD"),
  database: need("LOGIN_DATABASE"),
};
const shots = need("SHOTS");

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
  ],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  // Fills the login form as a person would; the System drop-down shows names ("PostgreSQL"),
  // so it is chosen by what a person reads.
  const logIn = async (password) => {
    await page.goto(url);
    await page.selectOption('select[name="auth[driver]"]', { label: login.system });
    await page.fill('input[name="auth[server]"]', login.server);
    await page.fill('input[name="auth[username]"]', login.username);
    await page.fill('input[name="auth[password]"]', password);
    await page.fill('input[name="auth[db]"]', login.database);
    await Promise.all([page.waitForLoadState("load"), page.click('input[type="submit"]')]);
    return page.locator(".error").allTextContents();
  };

  // A wrong password must be refused, and say so.
  const refused = await logIn(`${login.password}-wrong`);
  await page.screenshot({ path: `${shots}/0-wrong-password.png` });
  if (!refused.length) throw new Error("Adminer accepted a wrong password");
  console.log(`adminer: a wrong password is refused: ${refused.join(" ").trim()}`);

  const error = await logIn(login.password);
  await page.screenshot({ path: `${shots}/1-logged-in.png` });
  if (error.length) throw new Error(`Adminer refused the login: ${error.join(" ")}`);
  await page.getByRole("link", { name: "default_liquidation_rolling_avg_hist", exact: true }).first().waitFor();
  await page.screenshot({ path: `${shots}/2-tables.png`, fullPage: true });

  for (const [table, shot] of [
    ["default_liquidation_rolling_avg_hist", "3-hist.png"],
    ["default_liquidation_rolling_avg", "4-view.png"],
  ]) {
    // "select" is the link a person clicks to see a table's rows; the name must end the link, or
    // the view's name would also match the table whose name starts with it.
    const href = await page
      .locator(`a[href$="select=${table}"]`)
      .first()
      .getAttribute("href");
    if (!href) throw new Error(`no link to the rows of ${table}`);
    await page.goto(new URL(href, page.url()).toString());
    const rows = page.locator("table.checkable tbody tr");
    await rows.first().waitFor();
    const count = await rows.count();
    const text = await page.locator("table.checkable").innerText();
    for (const column of ["date_of_repayment", "liquidation_to_default_ratio", "ratio_rolling_avg_7d", "rolling_window_days", "created_at"]) {
      if (!text.includes(column)) throw new Error(`${table}: column ${column} is not shown`);
    }
    if (!/\b20\d\d-\d\d-\d\d\b/.test(text)) throw new Error(`${table}: no dates among the rows`);
    const heading = await page.locator("h2").first().innerText();
    if (heading.trim() !== `Select: ${table}`) throw new Error(`${table}: the page shows "${heading}"`);
    await page.screenshot({ path: `${shots}/${shot}`, fullPage: false });
    console.log(`adminer: ${table}: ${count} rows on the first page; screenshot ${shots}/${shot}`);
  }
} catch (err) {
  failed = true;
  console.error(`adminer: FAIL: ${err.message}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
