// A compiled `terraform` stand-in: appends its arguments (space-separated, one line) to
// ../marker relative to its own file (the tests copy it into WORLD/bin/terraform).
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char exe[PATH_MAX], path[PATH_MAX + 16];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		return 1;
	exe[n] = 0;
	snprintf(path, sizeof(path), "%s/../marker", dirname(exe));
	FILE *f = fopen(path, "a");
	if (!f)
		return 1;
	for (int i = 1; i < argc; i++)
		fprintf(f, "%s%s", i > 1 ? " " : "", argv[i]);
	fputc('\n', f);
	return fclose(f) == 0 ? 0 : 1;
}
