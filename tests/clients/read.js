// A real API client of WakaTime (npm wakatime-client) reading from `hbw serve`: the answers it
// decodes, as JSON on stdout. Usage: node read.js BASE_URL API_KEY START_DATE END_DATE
const { WakaTimeClient, RANGE } = require('wakatime-client');

async function main() {
  const [baseUrl, key, startDate, endDate] = process.argv.slice(2);
  const client = new WakaTimeClient(key, baseUrl);
  const out = {
    me: await client.getMe(),
    projects: await client.getMyProjects(),
    userAgents: await client.getMyUserAgents(),
    goals: await client.getMyGoals(),
    summary: await client.getMySummary({ dateRange: { startDate, endDate } }),
    stats: await client.getMyStats({ range: RANGE.LAST_7_DAYS }),
    durations: await client.getMyDurations({ date: startDate }),
    heartbeats: await client.getMyHeartbeats(startDate),
  };
  process.stdout.write(JSON.stringify(out));
}

main().catch((error) => {
  const status = error.response ? error.response.status : 'no answer';
  process.stderr.write(`${status}: ${error.message}\n`);
  process.exit(1);
});
